//! Tests of the whole loading path: command line, YAML, conversion, validation.
//!
//! `receptor_mesh::firewall::Rule::parse` is implemented elsewhere (it is `todo!()` while this
//! module is written), so these tests never hand it a well-formed rule list: they only check that
//! malformed `firewallrules` are refused before it is called, and the property tests keep the
//! `firewallrules` key out of their inputs.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

fn run(line: &str) -> Config {
    match from_args(args(line)) {
        Ok(Invocation::Run(config)) => config,
        Ok(Invocation::Print(text)) => panic!("printed instead of running: {text}"),
        Err(e) => panic!("{line}: {e}"),
    }
}

fn cli_problems(line: &str) -> Vec<Problem> {
    match from_args(args(line)) {
        Err(e) => e.problems,
        Ok(other) => panic!("{line} should fail, got {other:?}"),
    }
}

fn yaml(text: &str) -> Config {
    from_yaml_str(text, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
}

fn yaml_problems(text: &str) -> Vec<Problem> {
    match from_yaml_str(text, "test.yaml") {
        Err(e) => e.problems,
        Ok(config) => panic!("should fail, got {config:?}"),
    }
}

fn messages(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.message.as_str()).collect()
}

/// Exactly one problem, with this message.
fn only(problems: &[Problem], message: &str) {
    assert_eq!(messages(problems), vec![message], "{problems:#?}");
}

#[test]
fn command_line_and_yaml_give_the_same_config() {
    let cli = run(concat!(
        "--node id=node1 datadir=/var/lib/receptor maxidleconnectiontimeout=1m30s ",
        "--log-level debug ",
        "--tcp-listener port=11111 cost=2.5 nodecost={\"node2\":1.5,\"node3\":4} ",
        "allowedpeers=node2 allowedpeers=node3 ",
        "--tcp-peer other.example:2222 redial=false cost=2.5 ",
        "--control-service service=control filename=/tmp/node1.sock permissions=0660",
    ));
    let from_yaml = yaml(
        r#"---
- node:
    id: node1
    datadir: /var/lib/receptor
    MaxIdleConnectionTimeout: 1m30s
- log-level: debug
- tcp-listener:
    port: 11111
    cost: 2.5
    nodecost:
      node2: 1.5
      node3: 4
    allowedpeers: [node2, node3]
- tcp-peer:
    address: other.example:2222
    redial: false
    cost: 2.5
- control-service:
    service: control
    filename: /tmp/node1.sock
    permissions: 0660
"#,
    );
    assert_eq!(cli.args.len(), 20);
    assert_eq!(cli.args[0], "--node");
    assert_eq!(cli.config_file, None);
    let cli = Config {
        args: Vec::new(),
        ..cli
    };
    assert_eq!(cli, from_yaml);

    let c = from_yaml;
    assert_eq!(c.node.id, "node1");
    assert_eq!(c.node.datadir, PathBuf::from("/var/lib/receptor"));
    assert_eq!(c.node.max_idle_connection_timeout, Duration::from_secs(90));
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(
        c.tcp_listeners,
        vec![TcpListenerConfig {
            port: 11111,
            bind_addr: "0.0.0.0".into(),
            tls: None,
            cost: 2.5,
            node_cost: BTreeMap::from([("node2".into(), 1.5), ("node3".into(), 4.0)]),
            allowed_peers: Some(vec!["node2".into(), "node3".into()]),
        }]
    );
    assert_eq!(
        c.tcp_peers,
        vec![TcpPeerConfig {
            address: "other.example:2222".into(),
            redial: false,
            tls: None,
            cost: 2.5,
            allowed_peers: None,
        }]
    );
    assert_eq!(
        c.control_services,
        vec![ControlServiceConfig {
            service: Some("control".into()),
            filename: Some("/tmp/node1.sock".into()),
            permissions: 0o660,
            tls: None,
            tcp_listen: None,
            tcp_tls: None,
        }]
    );
    assert!(c.has_backends());
    assert!(unsupported(&c).is_empty(), "{:?}", unsupported(&c));
}

const SPEC_EXAMPLE: &str = r#"---
- node:
    id: node1
    datadir: /var/lib/receptor
- log-level: debug
- tcp-listener:
    port: 11111
- control-service:
    filename: /tmp/node1.sock
- tcp-server: {port: 11112, remotenode: localhost, remoteservice: control}
- work-command:
    workType: echo-uppercase      # keys are case-insensitive
    command: bash
    params: "-c \"read PAYLOAD; echo ${PAYLOAD^^}\""
    allowruntimeparams: true
"#;

#[test]
fn spec_example_parses_into_typed_structs() {
    let c = yaml(SPEC_EXAMPLE);
    assert_eq!(c.node.id, "node1");
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(c.tcp_listeners.len(), 1);
    assert_eq!(c.tcp_listeners[0].port, 11111);
    assert_eq!(c.tcp_listeners[0].cost, 1.0);
    assert_eq!(c.tcp_listeners[0].allowed_peers, None);
    assert_eq!(
        c.control_services,
        vec![ControlServiceConfig {
            service: Some("control".into()),
            filename: Some("/tmp/node1.sock".into()),
            permissions: 0o600,
            tls: None,
            tcp_listen: None,
            tcp_tls: None,
        }]
    );
    assert_eq!(
        c.tcp_servers,
        vec![TcpServerConfig {
            port: 11112,
            bind_addr: "0.0.0.0".into(),
            remote_node: "localhost".into(),
            remote_service: "control".into(),
            tls_server: None,
            tls_client: None,
        }]
    );
    assert_eq!(
        c.work_commands,
        vec![WorkCommandConfig {
            work_type: "echo-uppercase".into(),
            command: "bash".into(),
            params: "-c \"read PAYLOAD; echo ${PAYLOAD^^}\"".into(),
            allow_runtime_params: true,
            verify_signature: false,
        }]
    );
}

#[test]
fn spec_example_is_fully_supported() {
    let c = yaml(SPEC_EXAMPLE);
    assert_eq!(c.tcp_servers.len(), 1);
    assert!(messages(&unsupported(&c)).is_empty());
}

#[test]
fn command_service_commands_are_split_when_parsed() {
    let c = yaml(
        "- node:\n    id: a\n- command-service:\n    service: sh\n    command: sh -c \"echo a b\"\n",
    );
    assert_eq!(c.command_services[0].argv, ["sh", "-c", "echo a b"]);
    assert!(unsupported(&c).is_empty());
    let problems = cli_problems("--node id=a --command-service service=sh command=");
    assert_eq!(messages(&problems), vec!["command is empty"]);
    let problems = cli_problems("--node id=a --command-service service=sh command=\"x");
    assert!(
        messages(&problems)[0].starts_with("cannot split command"),
        "{problems:?}"
    );
}

#[test]
fn unsupported_entities_are_reported() {
    let problems = unsupported(&run(
        "--node id=a --ip-router networkname=n localnet=10.0.0.0/30",
    ));
    assert_eq!(messages(&problems), vec!["not supported yet: ip-router"]);
    assert_eq!(problems[0].entity.as_deref(), Some("ip-router"));
}

#[test]
fn control_service_listener_params_are_parsed_and_supported() {
    let c = run(
        "--node id=a --tls-server name=s cert=c key=k --control-service tcplisten=11113 tls=s tcptls=s",
    );
    assert_eq!(
        c.control_services[0].tcp_listen.as_deref(),
        Some("0.0.0.0:11113")
    );
    assert!(messages(&unsupported(&c)).is_empty());
    let c = run("--node id=a --control-service tcplisten=127.0.0.1:9000");
    assert_eq!(
        c.control_services[0].tcp_listen.as_deref(),
        Some("127.0.0.1:9000")
    );
}

#[test]
fn every_mistake_in_a_file_is_reported_with_its_line() {
    let problems = yaml_problems(
        "---\n\
         - node:\n\
         \x20   id: node1\n\
         - tcp-listner:\n\
         \x20   port: 1\n\
         - tcp-listener:\n\
         \x20   prot: 11111\n\
         - tcp-peer:\n\
         \x20   address: host:1\n\
         \x20   cost: cheap\n",
    );
    let got: Vec<(Option<&str>, &str)> = problems
        .iter()
        .map(|p| (p.location.as_deref(), p.message.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some("test.yaml:4"), "unknown config type tcp-listner"),
            (
                Some("test.yaml:7"),
                "unknown field name prot (valid fields: port, bindaddr, tls, cost, nodecost, allowedpeers)"
            ),
            (Some("test.yaml:6"), "required parameter(s) missing: port"),
            (
                Some("test.yaml:10"),
                "invalid value for cost: \"cheap\" is not a number"
            ),
        ]
    );
    assert_eq!(problems[1].entity.as_deref(), Some("tcp-listener"));
    // The Display form: one problem per line, message first.
    let text = ConfigError { problems }.to_string();
    assert_eq!(text.lines().count(), 4);
    assert!(
        text.starts_with("unknown config type tcp-listner (test.yaml:4)\n"),
        "{text}"
    );
    assert!(text.contains("required parameter(s) missing: port (in tcp-listener, test.yaml:6)"));
}

#[test]
fn yaml_syntax_errors_have_a_line() {
    let problems = yaml_problems("- node:\n    id: a\n- tcp-listener: {port: 1\n- local-only\n");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].message.starts_with("yaml syntax error: "));
    let line: usize = problems[0]
        .location
        .as_deref()
        .and_then(|l| l.strip_prefix("test.yaml:"))
        .and_then(|n| n.parse().ok())
        .expect("a line");
    assert!((3..=5).contains(&line), "{problems:?}");
}

#[test]
fn yaml_item_shapes() {
    let problems = yaml_problems("- node: {id: a}\n- {local-only: , trace: }\n");
    only(&problems, "config format invalid: item has multiple names");
    assert_eq!(problems[0].location.as_deref(), Some("test.yaml:2"));

    // A mapping is Go's version 2 layout (see version_2_layout_reads_like_the_list_layout);
    // a lone scalar is neither layout.
    assert_eq!(yaml("node:\n  id: a\n").node.id, "a");
    let problems = yaml_problems("node\n");
    assert!(problems[0].message.contains("expected a list of entities"));

    let problems = yaml_problems("- node: [a, b]\n");
    assert!(problems[0].message.contains("params must be a mapping"));

    let problems = yaml_problems("- [a]\n");
    assert!(problems[0].message.contains("one-key mapping"));

    // Entity names are not lower-cased in YAML; param keys are.
    let problems = yaml_problems("- node: {id: a}\n- UDP-listener: {port: 1}\n");
    only(&problems, "unknown config type UDP-listener");

    // `- local-only`, `- local-only:` and an empty file all work.
    assert!(yaml("- node: {id: a}\n- local-only\n").local_only);
    assert!(yaml("- node: {id: a}\n- local-only:\n").local_only);
    assert!(!yaml("- node: {id: a}\n").local_only);
    from_yaml_str("", "empty.yaml")
        .map(|_| ())
        .unwrap_or_else(|e| {
            // The implicit node may fail on a host called localhost; nothing else may.
            assert!(
                e.problems
                    .iter()
                    .all(|p| p.entity.as_deref() == Some("node")),
                "{e}"
            );
        });

    let problems = yaml_problems("- node: {id: a, ID: b}\n");
    only(&problems, "field id given more than once");
}

#[test]
fn ints_use_automatic_base() {
    let c = run("--node id=a --control-service filename=/s permissions=0600");
    assert_eq!(c.control_services[0].permissions, 0o600);
    let c = run("--node id=a --control-service filename=/s permissions=0x1ff");
    assert_eq!(c.control_services[0].permissions, 0o777);
    let c = run("--node id=a --control-service filename=/s permissions=420");
    assert_eq!(c.control_services[0].permissions, 420);
    let c = yaml("- node: {id: a}\n- control-service: {filename: /s, permissions: '0640'}\n");
    assert_eq!(c.control_services[0].permissions, 0o640);
    let c = yaml("- node: {id: a}\n- tcp-listener: {port: 0x2b67}\n");
    assert_eq!(c.tcp_listeners[0].port, 11111);
    let problems = cli_problems("--node id=a --tcp-listener port=099");
    only(
        &problems,
        "invalid value for port: \"099\" is not an integer",
    );
    let problems = cli_problems("--node id=a --tcp-listener port=70000");
    only(&problems, "port 70000 is out of range 0-65535");
}

#[test]
fn booleans_accept_every_spelling() {
    for t in [
        "1", "t", "T", "Y", "true", "TRUE", "True", "yes", "Yes", "YES",
    ] {
        let c = run(&format!(
            "--node id=a --tcp-peer h:1 redial=false --tcp-peer h:2 redial={t}"
        ));
        assert!(c.tcp_peers[1].redial, "{t}");
        let c = yaml(&format!(
            "- node: {{id: a}}\n- tcp-peer: {{address: 'h:1', redial: {t}}}\n"
        ));
        assert!(c.tcp_peers[0].redial, "{t}");
    }
    for f in [
        "0", "f", "F", "N", "false", "FALSE", "False", "no", "No", "NO",
    ] {
        let c = run(&format!("--node id=a --tcp-peer h:1 redial={f}"));
        assert!(!c.tcp_peers[0].redial, "{f}");
        let c = yaml(&format!(
            "- node: {{id: a}}\n- tcp-peer: {{address: 'h:1', redial: {f}}}\n"
        ));
        assert!(!c.tcp_peers[0].redial, "{f}");
    }
    let problems = cli_problems("--node id=a --tcp-peer h:1 redial=maybe");
    only(
        &problems,
        "invalid value for redial: \"maybe\" is not a boolean",
    );
    // Defaults.
    assert!(run("--node id=a --tcp-peer h:1").tcp_peers[0].redial);
}

#[test]
fn floats_and_string_fields_accept_numbers() {
    for (text, want) in [
        ("1", 1.0),
        ("1.5", 1.5),
        ("52", 52.0),
        ("0.2", 0.2),
        ("1e1", 10.0),
    ] {
        let c = run(&format!("--node id=a --tcp-listener port=0 cost={text}"));
        assert_eq!(c.tcp_listeners[0].cost, want, "{text}");
    }
    // Full precision from YAML (not Go's %f rounding, which only applies to string fields).
    let c = yaml("- node: {id: a}\n- tcp-listener: {port: 0, cost: 0.1234567}\n");
    assert_eq!(c.tcp_listeners[0].cost, 0.1234567);
    // A string field given an int, a float or a bool in YAML.
    let c = yaml("- node: {id: 1234}\n- work-command: {worktype: 7, command: 1.5, params: true}\n");
    assert_eq!(c.node.id, "1234");
    assert_eq!(c.work_commands[0].work_type, "7");
    assert_eq!(c.work_commands[0].command, "1.500000");
    assert_eq!(c.work_commands[0].params, "true");
    let c = yaml("- node: {id: a}\n- control-service: {tcplisten: 11113}\n");
    assert_eq!(
        c.control_services[0].tcp_listen.as_deref(),
        Some("0.0.0.0:11113")
    );
}

#[test]
fn lists_append_or_take_json() {
    let c = run(
        "--node id=a --tcp-listener port=0 allowedpeers=x allowedpeers=y allowedpeers=[\"z\",\"w\"]",
    );
    assert_eq!(
        c.tcp_listeners[0].allowed_peers,
        Some(vec!["x".into(), "y".into(), "z".into(), "w".into()])
    );
    let c = run("--node id=a --tcp-listener port=0 allowedpeers=[]");
    assert_eq!(c.tcp_listeners[0].allowed_peers, Some(vec![]));
    let c = yaml("- node: {id: a}\n- tcp-listener: {port: 0, allowedpeers: []}\n");
    assert_eq!(c.tcp_listeners[0].allowed_peers, Some(vec![]));
    let c = yaml("- node: {id: a}\n- tcp-listener: {port: 0, allowedpeers: solo}\n");
    assert_eq!(c.tcp_listeners[0].allowed_peers, Some(vec!["solo".into()]));
    let problems = cli_problems("--node id=a --tcp-listener port=0 allowedpeers=[broken");
    assert!(
        problems[0]
            .message
            .starts_with("invalid value for allowedpeers: invalid JSON list")
    );
    // Non-list keys may not repeat.
    let problems = cli_problems("--node id=a --tcp-listener port=1 port=2");
    only(&problems, "field port given more than once");
}

#[test]
fn maps_are_json_objects_or_yaml_mappings() {
    for json in [
        "{}",
        "{\"a\":1}",
        "{\"a\":1.1}",
        "{\"a\":1.3,\"b\":5.6,\"c\":0.2}",
    ] {
        let c = run(&format!(
            "--node id=test --tcp-listener port=0 nodecost={json}"
        ));
        let want: BTreeMap<String, f64> = serde_json::from_str(json).expect("json");
        assert_eq!(c.tcp_listeners[0].node_cost, want);
    }
    let c = yaml("- node: {id: a}\n- tcp-listener: {port: 0, nodecost: '{\"b\": 2}'}\n");
    assert_eq!(
        c.tcp_listeners[0].node_cost,
        BTreeMap::from([("b".into(), 2.0)])
    );
    let problems = cli_problems("--node id=a --tcp-listener port=0 nodecost=[1]");
    only(
        &problems,
        "invalid value for nodecost: expected a JSON object",
    );
}

#[test]
fn bare_values() {
    let c = run("--node node7 --log-level Warning --tcp-listener 2222 --tcp-peer host:3333");
    assert_eq!(c.node.id, "node7");
    assert_eq!(c.log_level, LogLevel::Warning);
    assert_eq!(c.tcp_listeners[0].port, 2222);
    assert_eq!(c.tcp_peers[0].address, "host:3333");
    let c =
        yaml("- node: node7\n- log-level: debug\n- tcp-peer: host:2222\n- tcp-listener: 2223\n");
    assert_eq!(c.node.id, "node7");
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(c.tcp_peers[0].address, "host:2222");
    assert_eq!(c.tcp_listeners[0].port, 2223);
    only(
        &cli_problems("--node id=a --local-only yes"),
        "command does not allow bare values",
    );
    only(
        &yaml_problems("- node: a\n- trace: on\n"),
        "command does not allow bare values",
    );
}

#[test]
fn names_and_keys_are_case_insensitive_on_the_command_line() {
    let c = run("-NODE ID=a -Tcp-Listener PORT=5 --Log-Level level=INFO");
    assert_eq!(c.node.id, "a");
    assert_eq!(c.tcp_listeners[0].port, 5);
    assert_eq!(c.log_level, LogLevel::Info);
}

#[test]
fn log_level_defaults() {
    assert_eq!(run("--node id=a").log_level, LogLevel::Info);
    assert_eq!(run("--node id=a --log-level").log_level, LogLevel::Error);
    let problems = cli_problems("--node id=a --log-level loud");
    assert_eq!(
        problems[0].message,
        "invalid log level \"loud\": expected error, warning, info or debug"
    );
}

#[test]
fn cost_must_be_positive() {
    let problems = cli_problems("--node id=test --tcp-listener port=0 cost=-1");
    only(&problems, "connection cost must be positive");
    assert_eq!(problems[0].entity.as_deref(), Some("tcp-listener"));
    assert_eq!(problems[0].location.as_deref(), Some("command line"));
    only(
        &cli_problems("--node id=test --tcp-peer h:1 cost=0"),
        "connection cost must be positive",
    );
    only(
        &cli_problems("--node id=test --tcp-listener port=0 nodecost={\"a\":1,\"b\":0}"),
        "connection cost must be positive for b",
    );
    let problems = yaml_problems(
        "- node: {id: a}\n- udp-listener: {port: 0, cost: -2, nodecost: {x: -1}}\n- ws-peer: {address: 'ws://h:1', cost: 0}\n",
    );
    assert_eq!(
        messages(&problems),
        vec![
            "connection cost must be positive",
            "connection cost must be positive for x",
            "connection cost must be positive",
        ]
    );
    assert_eq!(problems[2].location.as_deref(), Some("test.yaml:3"));
}

#[test]
fn singletons_may_appear_once() {
    let problems = cli_problems("--node id=a --log-level debug --log-level info");
    only(&problems, "directive \"log-level\" is only allowed once");
    let problems = yaml_problems("- node: {id: a}\n- node: {id: b}\n");
    only(&problems, "only one node directive is allowed");
    assert_eq!(problems[0].location.as_deref(), Some("test.yaml:2"));
}

#[test]
fn exclusive_entities_must_be_alone() {
    only(
        &cli_problems("--version --node id=a"),
        "cannot specify any other options with version",
    );
    let problems = cli_problems(
        "--cert-init commonname=ca bits=2048 outcert=ca.crt outkey=ca.key --local-only",
    );
    only(&problems, "cannot specify any other options with cert-init");
    let c = run("--cert-init commonname=ca bits=2048 outcert=ca.crt outkey=ca.key");
    let Some(CertCommand::Init(init)) = &c.cert_command else {
        panic!("no cert-init: {c:?}")
    };
    assert_eq!(init.bits, 2048);
    assert_eq!(init.out_key, PathBuf::from("ca.key"));
    assert!(unsupported(&c).is_empty(), "cert-init is implemented");
}

#[test]
fn help_no_arguments_and_version() {
    let Ok(Invocation::Print(help)) = from_args(Vec::new()) else {
        panic!("no arguments should print help")
    };
    assert!(help.starts_with("Usage: receptor"));
    assert!(help.contains("--tcp-listener"));
    for flag in ["--help", "-h", "-help", "--HELP"] {
        assert_eq!(
            from_args(args(flag)),
            Ok(Invocation::Print(help.clone())),
            "{flag}"
        );
    }
    // Help wins even over a broken command line.
    assert_eq!(
        from_args(args("--nonsense --help")),
        Ok(Invocation::Print(help.clone()))
    );
    let version = format!("{}\n", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        from_args(args("--version")),
        Ok(Invocation::Print(version.clone()))
    );
    assert_eq!(from_args(args("-version")), Ok(Invocation::Print(version)));
    let Ok(Invocation::Print(script)) = from_args(args("--bash-completion")) else {
        panic!("completion")
    };
    assert!(script.contains("complete -o default -F _receptor receptor"));
}

#[test]
fn command_line_structure_errors() {
    let problems = cli_problems("stray --node id=a --bogus x=1 y --tcp-listener port=1 prot=2");
    assert_eq!(
        messages(&problems),
        vec![
            "parameter specified before command: stray",
            "unknown config type bogus",
            "unknown field name prot (valid fields: port, bindaddr, tls, cost, nodecost, allowedpeers)",
        ]
    );
    only(
        &cli_problems("--node id=a --tcp-listener"),
        "required parameter(s) missing: port",
    );
    only(
        &cli_problems("--node id=a --tcp-server port=1"),
        "required parameter(s) missing: remotenode, remoteservice",
    );
    only(&cli_problems("--node id=a -c"), "-c needs a file name");
}

#[test]
fn node_ids_are_validated() {
    only(
        &cli_problems("--node id=localhost"),
        "node ID \"localhost\" is reserved",
    );
    only(
        &cli_problems("--node id=a:b"),
        "node ID \"a:b\" must not contain ':'",
    );
    only(
        &cli_problems("--node id=a maxidleconnectiontimeout=20s"),
        "maxidleconnectiontimeout must be at least 21s",
    );
    only(
        &cli_problems("--node id=a maxidleconnectiontimeout=30"),
        "invalid value for maxidleconnectiontimeout: missing unit in duration \"30\"",
    );
}

#[test]
fn implicit_node_uses_the_host_name() {
    let result = from_args(args("--local-only"));
    match entities::node_id_from_hostname(entities::hostname()) {
        Ok(id) => {
            let Ok(Invocation::Run(c)) = result else {
                panic!("{result:?}")
            };
            assert_eq!(c.node.id, id);
            assert_eq!(c.node.datadir, PathBuf::from("/tmp/receptor"));
            assert_eq!(c.node.max_idle_connection_timeout, Duration::from_secs(21));
        }
        Err(message) => {
            let Err(e) = result else { panic!("{result:?}") };
            only(&e.problems, &message);
        }
    }
}

#[test]
fn firewall_rules_must_be_lists_of_string_maps() {
    // Shape errors only; see the module doc about Rule::parse.
    let problems = cli_problems("--node id=a firewallrules=[\"drop\"]");
    only(
        &problems,
        "invalid value for firewallrules: rule 1: expected an object",
    );
    let problems = yaml_problems("- node:\n    id: a\n    firewallrules:\n      - action: 1\n");
    only(
        &problems,
        "invalid value for firewallrules: rule 1: value of \"action\" is not a string",
    );
    assert_eq!(problems[0].location.as_deref(), Some("test.yaml:3"));
    let problems = yaml_problems("- node:\n    id: a\n    firewallrules: drop\n");
    assert!(problems[0].message.contains("expected a list of mappings"));
}

#[test]
fn ws_peer_checks() {
    let c = run("--node id=a --ws-peer wss://h:443/p extraheader=X-Token:abc");
    assert_eq!(
        c.ws_peers[0].extra_header,
        Some(("X-Token".to_owned(), "abc".to_owned()))
    );
    let problems = cli_problems("--node id=a --ws-peer h:443 extraheader=nocolon");
    assert_eq!(
        messages(&problems),
        vec![
            "address h:443 is not a valid URL: missing scheme (expected ws:// or wss://)",
            "extra header must be in the form key:value",
        ]
    );
    let problems = cli_problems("--node id=a --ws-peer http://h:443");
    only(
        &problems,
        "address http://h:443 is not a valid URL: unsupported scheme \"http\" (expected ws or wss)",
    );
    let c = run("--node id=a --ws-listener 8080");
    assert_eq!(c.ws_listeners[0].path, "/");
    assert_eq!(c.ws_listeners[0].bind_addr, "0.0.0.0");
}

#[test]
fn tls_references_must_exist() {
    let problems = cli_problems(
        "--node id=a --tcp-listener port=1 tls=nope --tcp-peer h:1 tls=srv --tls-server name=srv cert=c key=k",
    );
    assert_eq!(
        messages(&problems),
        vec![
            "no tls-server named nope is configured",
            "no tls-client named srv is configured"
        ]
    );
    only(
        &cli_problems("--node id=a --tls-client name=c cert=x"),
        "cert and key must both be supplied or neither",
    );
    let c = run(
        "--node id=a --tls-client name=c pinnedservercert=00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff --tcp-peer h:1 tls=c",
    );
    assert_eq!(c.tls_clients[0].pinned_server_cert[0].len(), 32);
    assert_eq!(c.tcp_peers[0].tls.as_deref(), Some("c"));
}

#[test]
fn work_entities() {
    only(
        &cli_problems("--node id=a --work-python worktype=p plugin=x function=y"),
        "[DEPRECATION WARNING] 'work-python' option is not currently being used; remove it from the configuration",
    );
    only(
        &cli_problems("--node id=a --work-command worktype=w command=c verifysignature=true"),
        "VerifySignature for work command 'w' is true, but the work verification public key is not specified",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key.pub");
    std::fs::write(&key, "ssh-rsa AAAA not parsed at startup").expect("write");
    let c = run(&format!(
        "--node id=a --work-verification {} --work-signing privatekey={} tokenexpiration=10h30m --work-command worktype=w command=c verifysignature=true",
        key.display(),
        key.display()
    ));
    assert_eq!(
        c.work_signing.as_ref().map(|s| s.token_expiration),
        Some(Duration::from_secs(37800))
    );
    assert_eq!(
        c.work_verification.as_ref().map(|v| v.public_key.clone()),
        Some(key)
    );
    let c = run(&format!(
        "--node id=a --work-signing {}",
        dir.path().join("key.pub").display()
    ));
    assert_eq!(
        c.work_signing.map(|s| s.token_expiration),
        Some(Duration::from_secs(300))
    );
    only(
        &cli_problems("--node id=a --work-verification /nonexistent/key.pub"),
        "public key file /nonexistent/key.pub does not exist",
    );
    let c = run("--node id=a --work-kubernetes worktype=k namespace=ns image=busybox");
    assert_eq!(c.work_kubernetes[0].auth_method, KubeAuthMethod::InCluster);
    assert_eq!(c.work_kubernetes[0].stream_method, KubeStreamMethod::Logger);
    assert!(c.work_kubernetes[0].delete_pod_on_restart);
    assert_eq!(
        messages(&cli_problems(
            "--node id=a --work-kubernetes worktype=k authmethod=magic"
        )),
        vec![
            "invalid authmethod \"magic\": expected kubeconfig, incluster or runtime",
            "must provide namespace when neither kubeconfig nor allowruntimeauth is given",
            "must specify a container image (or pod, allowruntimecommand or allowruntimepod)",
        ]
    );
}

#[test]
fn command_runner_is_accepted_with_node_and_log_level() {
    let c = run(
        "--node id=worker --log-level info --command-runner command=bash params= unitdir=/tmp/u",
    );
    assert_eq!(
        c.command_runner,
        Some(CommandRunnerConfig {
            command: "bash".into(),
            params: String::new(),
            unit_dir: "/tmp/u".into(),
        })
    );
    assert!(unsupported(&c).is_empty());
}

#[test]
fn cert_makereq_key_rules() {
    let c = run(
        "--cert-makereq commonname=n outreq=r.csr outkey=n.key bits=2048 nodeid=n1 nodeid=n2 ipaddress=127.0.0.1 dnsname=localhost",
    );
    let Some(CertCommand::MakeReq(req)) = c.cert_command else {
        panic!("makereq")
    };
    assert_eq!(
        req.key,
        CertReqKey::New {
            path: "n.key".into(),
            bits: 2048
        }
    );
    assert_eq!(req.node_ids, vec!["n1".to_owned(), "n2".to_owned()]);
    assert_eq!(
        req.ip_addresses,
        vec!["127.0.0.1".parse::<std::net::IpAddr>().expect("ip")]
    );
    only(
        &cli_problems("--cert-makereq commonname=n outreq=r.csr"),
        "exactly one of inkey or outkey must be given",
    );
    only(
        &cli_problems("--cert-makereq commonname=n outreq=r.csr inkey=k bits=1024"),
        "bits cannot be given with inkey",
    );
    only(
        &cli_problems("--cert-makereq commonname=n outreq=r.csr outkey=k"),
        "bits must be given with outkey",
    );
    let c = run(
        "--cert-signreq req=r cacert=c cakey=k outcert=o notafter=2030-01-02T03:04:05Z verify=yes",
    );
    let Some(CertCommand::SignReq(sign)) = c.cert_command else {
        panic!("signreq")
    };
    assert!(sign.verify);
    assert_eq!(sign.not_after.map(|t| t.year()), Some(2030));
}

#[test]
fn config_files_load_in_position() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let first = dir.path().join("first.yaml");
    let second = dir.path().join("second.yaml");
    std::fs::File::create(&first)?.write_all(b"- node: {id: filed}\n- tcp-listener: 1111\n")?;
    std::fs::File::create(&second)?.write_all(b"- tcp-listener: 3333\n")?;
    let argv = vec![
        "--tcp-listener".to_owned(),
        "0".to_owned(),
        "-c".to_owned(),
        first.display().to_string(),
        "--tcp-listener".to_owned(),
        "2222".to_owned(),
        "--config".to_owned(),
        second.display().to_string(),
    ];
    let Invocation::Run(c) = from_args(argv.clone())? else {
        anyhow::bail!("expected a config");
    };
    assert_eq!(c.node.id, "filed");
    let ports: Vec<u16> = c.tcp_listeners.iter().map(|l| l.port).collect();
    assert_eq!(ports, vec![0, 1111, 2222, 3333]);
    assert_eq!(c.config_file.as_deref(), Some(first.as_path()));
    assert_eq!(c.args, argv);

    // Problems in a file carry the file's name; a missing file is reported too.
    std::fs::write(&second, "- tcp-listener: {port: x}\n")?;
    let missing = dir.path().join("missing.yaml");
    let err = from_args(vec![
        "-c".to_owned(),
        first.display().to_string(),
        "-c".to_owned(),
        second.display().to_string(),
        "-c".to_owned(),
        missing.display().to_string(),
    ])
    .expect_err("bad files");
    assert_eq!(err.problems.len(), 2, "{err}");
    assert_eq!(
        err.problems[0].location,
        Some(format!("{}:1", second.display()))
    );
    assert!(
        err.problems[1]
            .message
            .starts_with("could not read config file")
    );
    Ok(())
}

// === property tests: bad input never panics ===

/// Entity names, keys (without firewallrules, see the module doc) and values to combine.
fn yaml_fragment() -> impl Strategy<Value = String> {
    let names: Vec<&'static str> = schema::ENTITIES.iter().map(|e| e.name).collect();
    let keys: Vec<&'static str> = schema::ENTITIES
        .iter()
        .flat_map(|e| e.params.iter().map(|p| p.name))
        .filter(|k| *k != "firewallrules")
        .collect();
    prop_oneof![
        proptest::sample::select(names).prop_map(|n| format!("- {n}:\n")),
        proptest::sample::select(keys).prop_map(|k| format!("    {k}: ")),
        Just("\n".to_owned()),
        Just("- ".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("&a ".to_owned()),
        Just("*a ".to_owned()),
        Just("'".to_owned()),
        Just("\"".to_owned()),
        Just(", ".to_owned()),
        Just(": ".to_owned()),
        Just("0600".to_owned()),
        Just("-1".to_owned()),
        Just("1e400".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("yes".to_owned()),
        Just("ws://h:1".to_owned()),
        Just("!!str ".to_owned()),
        Just("|\n  ".to_owned()),
        Just("\t".to_owned()),
        "[ -~]{0,6}",
    ]
}

fn cli_token() -> impl Strategy<Value = String> {
    let names: Vec<String> = schema::ENTITIES
        .iter()
        .map(|e| format!("--{}", e.name))
        .collect();
    let keys: Vec<&'static str> = schema::ENTITIES
        .iter()
        .flat_map(|e| e.params.iter().map(|p| p.name))
        .filter(|k| *k != "firewallrules")
        .collect();
    prop_oneof![
        proptest::sample::select(names),
        (proptest::sample::select(keys), "[ -~]{0,12}").prop_map(|(k, v)| format!("{k}={v}")),
        "-{0,3}[a-zA-Z=-]{0,10}",
        any::<String>(),
    ]
    // Never read arbitrary files, never reach Rule::parse.
    .prop_filter("no config files or firewall rules", |t| {
        let lower = t.to_ascii_lowercase();
        !matches!(lower.trim_start_matches('-'), "c" | "config") && !lower.contains("firewallrules")
    })
}

proptest! {
    #[test]
    fn random_text_never_panics(text in any::<String>()) {
        prop_assume!(!text.to_ascii_lowercase().contains("firewallrules"));
        let _ = from_yaml_str(&text, "fuzz.yaml");
    }

    #[test]
    fn random_yaml_like_text_never_panics(parts in proptest::collection::vec(yaml_fragment(), 0..40)) {
        let text: String = parts.concat();
        prop_assume!(!text.to_ascii_lowercase().contains("firewallrules"));
        if let Err(e) = from_yaml_str(&text, "fuzz.yaml") {
            prop_assert!(!e.problems.is_empty());
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn random_tokens_never_panic(tokens in proptest::collection::vec(cli_token(), 0..12)) {
        let _ = from_args(tokens);
    }
}

#[test]
fn canonical_items_mark_reloadable_entities() {
    let items = canonical_items(SPEC_EXAMPLE, "spec.yaml").expect("parses");
    let flags: Vec<(&str, bool)> = items
        .iter()
        .map(|i| (i.entity.as_str(), i.reloadable))
        .collect();
    assert_eq!(
        flags,
        vec![
            ("node", false),
            ("log-level", false),
            ("tcp-listener", true),
            ("control-service", false),
            ("tcp-server", false),
            ("work-command", false),
        ]
    );
    assert_eq!(items[2].canonical, r#"{"tcp-listener":{"port":"11111"}}"#);
    let err = canonical_items("- a: 1\n  b: 2\n", "x.yaml").expect_err("two names");
    only(
        &err.problems,
        "config format invalid: item has multiple names",
    );
}

#[test]
fn work_retention_is_a_node_duration_defaulting_to_keep() {
    assert_eq!(run("--node id=a").node.work_retention, None);
    assert_eq!(
        run("--node id=a workretention=0s").node.work_retention,
        None
    );
    assert_eq!(
        run("--node id=a workretention=1h30m").node.work_retention,
        Some(std::time::Duration::from_secs(5400))
    );
    assert_eq!(
        yaml("- node:\n    id: a\n    workretention: 2s\n")
            .node
            .work_retention,
        Some(std::time::Duration::from_secs(2))
    );
    only(
        &cli_problems("--node id=a workretention=30"),
        "invalid value for workretention: missing unit in duration \"30\"",
    );
}

#[test]
fn grpc_service_is_parsed_and_needs_a_listener() {
    let c = run("--node id=a --grpc-service filename=/g.sock permissions=0660 tcplisten=2223");
    assert_eq!(
        c.grpc_services,
        vec![GrpcServiceConfig {
            filename: Some("/g.sock".into()),
            permissions: 0o660,
            tcp_listen: Some("0.0.0.0:2223".into()),
            tcp_tls: None,
        }]
    );
    let c = yaml("- node: {id: a}\n- grpc-service: {filename: /g.sock}\n");
    assert_eq!(c.grpc_services[0].permissions, 0o600);
    let problems = cli_problems("--node id=a --grpc-service permissions=0600");
    assert!(
        messages(&problems)
            .iter()
            .any(|m| m.contains("no listeners specified")),
        "{problems:?}"
    );
    let problems = cli_problems("--node id=a --grpc-service filename=/g tcptls=nosuch");
    assert!(
        messages(&problems)
            .iter()
            .any(|m| m.contains("no tls-server named nosuch")),
        "{problems:?}"
    );
}

#[test]
fn work_ttl_is_a_node_duration_defaulting_to_none() {
    assert_eq!(run("--node id=a").node.work_ttl, None);
    assert_eq!(run("--node id=a workttl=0s").node.work_ttl, None);
    assert_eq!(
        run("--node id=a workttl=2h").node.work_ttl,
        Some(std::time::Duration::from_secs(7200))
    );
    assert_eq!(
        yaml("- node:\n    id: a\n    workttl: 90s\n").node.work_ttl,
        Some(std::time::Duration::from_secs(90))
    );
    only(
        &cli_problems("--node id=a workttl=soon"),
        "invalid value for workttl: invalid duration \"soon\"",
    );
}

#[test]
fn metrics_entity_is_off_by_default_and_parsed_from_both_front_ends() {
    assert_eq!(run("--node id=a").metrics, None);
    assert_eq!(
        run("--node id=a --metrics listen=127.0.0.1:9100").metrics,
        Some(MetricsConfig {
            listen: "127.0.0.1:9100".into(),
            path: "/metrics".into(),
        })
    );
    assert_eq!(
        run("--node id=a --metrics 9100 path=/m").metrics,
        Some(MetricsConfig {
            listen: "0.0.0.0:9100".into(),
            path: "/m".into(),
        })
    );
    assert_eq!(
        yaml("- node: {id: a}\n- metrics:\n    listen: \"[::1]:0\"\n").metrics,
        Some(MetricsConfig {
            listen: "[::1]:0".into(),
            path: "/metrics".into(),
        })
    );
    let problems = cli_problems("--node id=a --metrics path=/m");
    assert!(
        messages(&problems).iter().any(|m| m.contains("listen")),
        "{problems:?}"
    );
    let problems = cli_problems("--node id=a --metrics listen=nonsense path=metrics");
    let texts = messages(&problems);
    assert!(
        texts
            .iter()
            .any(|m| m.contains("neither a port nor host:port")),
        "{problems:?}"
    );
    assert!(
        texts.iter().any(|m| m.contains("must start with /")),
        "{problems:?}"
    );
    let problems = cli_problems("--node id=a --metrics 1 --metrics 2");
    assert!(
        messages(&problems)
            .iter()
            .any(|m| m.contains("only allowed once")),
        "{problems:?}"
    );
}

/// Go's version 2 layout (a mapping with list keys, as the upstream docs show) reads into
/// the same configuration as the list layout.
#[test]
fn version_2_layout_reads_like_the_list_layout() {
    let v2 = yaml(
        "version: 2\n\
         node:\n  id: foo\n  datadir: /tmp/foo\n\
         log-level:\n  level: debug\n\
         local-only: true\n\
         trace: false\n\
         tcp-listeners:\n  - port: 2222\n  - port: 2223\n    bindaddr: 127.0.0.1\n\
         tcp-peers:\n  - address: localhost:2224\n\
         control-services:\n  - service: control\n    filename: /tmp/foo.sock\n\
         work-commands:\n  - worktype: echo\n    command: bash\n    params: \"-c 'echo hi'\"\n",
    );
    let v1 = yaml(
        "- node:\n    id: foo\n    datadir: /tmp/foo\n\
         - log-level:\n    level: debug\n\
         - local-only\n\
         - tcp-listener:\n    port: 2222\n\
         - tcp-listener:\n    port: 2223\n    bindaddr: 127.0.0.1\n\
         - tcp-peer:\n    address: localhost:2224\n\
         - control-service:\n    service: control\n    filename: /tmp/foo.sock\n\
         - work-command:\n    worktype: echo\n    command: bash\n    params: \"-c 'echo hi'\"\n",
    );
    assert_eq!(v2, v1);
    assert!(v2.local_only && !v2.trace);
    assert_eq!(v2.tcp_listeners.len(), 2);

    // Problems carry the lines of the v2 file, and a wrong version or shape is named.
    let problems = yaml_problems("version: 3\nnode:\n  id: a\ntcp-peers:\n  address: x:1\n");
    assert_eq!(
        messages(&problems),
        vec![
            "config format invalid: a mapping is the version 2 layout; version must be 2",
            "config format invalid: tcp-peers must be a list, got a mapping",
        ]
    );
    let problems = yaml_problems("node:\n  id: a\ntcp-peers:\n  - port: 1\n");
    assert_eq!(
        problems[0].location.as_deref(),
        Some("test.yaml:4"),
        "{problems:#?}"
    );
}
