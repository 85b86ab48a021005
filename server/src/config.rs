//! Configuration: the `receptor --entity k=v ...` command line and the YAML files it names,
//! turned into one validated [`Config`] (spec/control-work-config.md §3, spec/wire.md §1.7).
//!
//! # Layout
//! - `schema`: the one table of entities and params. The command line, YAML and `--help` all
//!   read it.
//! - `cli`: the command-line tokenizer; `yaml`: a YAML tree with line numbers and the reader of
//!   configuration items; `value`: the conversion rules shared by both; `raw`: one entity's
//!   converted params with defaults applied.
//! - `entities`: the typed, validated struct of every entity, re-exported here.
//!
//! Every problem is collected before failing, so a [`ConfigError`] lists them all, each with its
//! location (`file.yaml:12` or `command line`) and entity.

mod cli;
mod entities;
mod raw;
mod schema;
mod value;

pub(crate) use value::parse_duration;
mod yaml;

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

/// The `metrics` entity (Rust only).
pub use entities::MetricsConfig;
pub use entities::{
    CertCommand, CertInitConfig, CertMakeReqConfig, CertReqKey, CertSignReqConfig,
    CommandRunnerConfig, CommandServiceConfig, ControlServiceConfig, DEFAULT_DATADIR,
    DEFAULT_IDLE_CONNECTION_TIMEOUT, DEFAULT_TOKEN_EXPIRATION, GrpcServiceConfig, IpRouterConfig,
    KubeAuthMethod, KubeStreamMethod, LogLevel, MIN_IDLE_CONNECTION_TIMEOUT, NodeConfig,
    TcpClientConfig, TcpListenerConfig, TcpPeerConfig, TcpServerConfig, TelemetryConfig,
    TlsClientConfig, TlsServerConfig, UdpClientConfig, UdpListenerConfig, UdpPeerConfig,
    UdpServerConfig, UnixSocketClientConfig, UnixSocketServerConfig, WorkCommandConfig,
    WorkKubernetesConfig, WorkSigningConfig, WorkVerificationConfig, WsListenerConfig,
    WsPeerConfig,
};
use raw::{RawEntity, Source};

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "built once per process and matched at once; boxing would only add noise for callers"
)]
pub enum Invocation {
    /// Run a node (or, with [`Config::cert_command`] / [`Config::command_runner`] set, that
    /// utility) with this configuration.
    Run(Config),
    /// Print this text to stdout and exit 0 (`--help`, no arguments, `--version`).
    Print(String),
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `file.yaml:12` or `command line`; `None` for the implicit node and whole-config checks.
    pub location: Option<String>,
    /// The entity concerned (`tcp-listener`), when there is one.
    pub entity: Option<String>,
    /// What is wrong, lower-case, in Go receptor's words where it has them.
    pub message: String,
}

/// Renders `message (in entity, location)`, so `Error: <problem>` still starts with Go's text.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        let context: Vec<String> = self
            .entity
            .iter()
            .map(|e| format!("in {e}"))
            .chain(self.location.iter().cloned())
            .collect();
        if !context.is_empty() {
            write!(f, " ({})", context.join(", "))?;
        }
        Ok(())
    }
}

/// The configuration is invalid: every problem found, in input order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.problems))]
pub struct ConfigError {
    /// Never empty.
    pub problems: Vec<Problem>,
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A validated configuration. Defaults are applied; lists keep the order of the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `node` (implicit with defaults when absent).
    pub node: NodeConfig,
    /// `log-level`; [`LogLevel::Info`] when the entity is absent.
    pub log_level: LogLevel,
    /// `local-only` was given.
    pub local_only: bool,
    /// `trace` was given (no effect, as in Go).
    pub trace: bool,
    /// `tls-server` entities.
    pub tls_servers: Vec<TlsServerConfig>,
    /// `tls-client` entities.
    pub tls_clients: Vec<TlsClientConfig>,
    /// `tcp-listener` entities.
    pub tcp_listeners: Vec<TcpListenerConfig>,
    /// `tcp-peer` entities.
    pub tcp_peers: Vec<TcpPeerConfig>,
    /// `udp-listener` entities.
    pub udp_listeners: Vec<UdpListenerConfig>,
    /// `udp-peer` entities.
    pub udp_peers: Vec<UdpPeerConfig>,
    /// `ws-listener` entities.
    pub ws_listeners: Vec<WsListenerConfig>,
    /// `ws-peer` entities.
    pub ws_peers: Vec<WsPeerConfig>,
    /// `control-service` entities.
    pub control_services: Vec<ControlServiceConfig>,
    /// `grpc-service` entities (Rust only).
    pub grpc_services: Vec<GrpcServiceConfig>,
    /// `telemetry` (Rust only); `None` leaves tracing export to the `OTEL_*` variables.
    pub telemetry: Option<TelemetryConfig>,
    /// `metrics` (Rust only): the Prometheus endpoint; `None` serves nothing.
    pub metrics: Option<MetricsConfig>,
    /// `work-command` entities.
    pub work_commands: Vec<WorkCommandConfig>,
    /// `work-kubernetes` entities.
    pub work_kubernetes: Vec<WorkKubernetesConfig>,
    /// `work-signing`.
    pub work_signing: Option<WorkSigningConfig>,
    /// `work-verification`.
    pub work_verification: Option<WorkVerificationConfig>,
    /// `tcp-server` entities.
    pub tcp_servers: Vec<TcpServerConfig>,
    /// `tcp-client` entities.
    pub tcp_clients: Vec<TcpClientConfig>,
    /// `udp-server` entities.
    pub udp_servers: Vec<UdpServerConfig>,
    /// `udp-client` entities.
    pub udp_clients: Vec<UdpClientConfig>,
    /// `unix-socket-server` entities.
    pub unix_socket_servers: Vec<UnixSocketServerConfig>,
    /// `unix-socket-client` entities.
    pub unix_socket_clients: Vec<UnixSocketClientConfig>,
    /// `command-service` entities.
    pub command_services: Vec<CommandServiceConfig>,
    /// `ip-router` entities.
    pub ip_routers: Vec<IpRouterConfig>,
    /// `cert-init`, `cert-makereq` or `cert-signreq`: run it and exit (it is then the only
    /// entity, and `node` holds defaults that were not validated).
    pub cert_command: Option<CertCommand>,
    /// The hidden `command-runner`: run one work unit's command and exit (spec §2.6).
    pub command_runner: Option<CommandRunnerConfig>,
    /// The first `--config`/`-c` path on the command line (`reload` re-reads it).
    pub config_file: Option<PathBuf>,
    /// The original argv without argv\[0\] (`reload` re-parses it).
    pub args: Vec<String>,
}

impl Config {
    /// Whether anything keeps the node connected or alive: a listener, a peer or `local-only`.
    /// Without one, Go logs "Nothing to do - no backends are running." and exits 1.
    pub fn has_backends(&self) -> bool {
        self.local_only
            || !self.tcp_listeners.is_empty()
            || !self.tcp_peers.is_empty()
            || !self.udp_listeners.is_empty()
            || !self.udp_peers.is_empty()
            || !self.ws_listeners.is_empty()
            || !self.ws_peers.is_empty()
    }
}

/// Parses argv (without argv\[0\]) and reads the `--config`/`-c` files it names.
///
/// # Errors
/// Every problem in the command line and the files, at once.
pub fn from_args<I: IntoIterator<Item = String>>(args: I) -> Result<Invocation, ConfigError> {
    let args: Vec<String> = args.into_iter().collect();
    match cli::special(&args) {
        Some(cli::Special::Help) => return Ok(Invocation::Print(help_text())),
        Some(cli::Special::BashCompletion) => {
            return Ok(Invocation::Print(schema::bash_completion()));
        }
        None => {}
    }
    let mut problems = Vec::new();
    let parsed = cli::parse(&args, &mut problems);
    let (mut config, version) = assemble(&parsed.entities, problems)?;
    if version {
        return Ok(Invocation::Print(version_text()));
    }
    config.config_file = parsed.config_file;
    config.args = args;
    Ok(Invocation::Run(config))
}

/// Like [`from_args`] with a single `--config` file, but with the YAML text given directly
/// (tests, an embedded default configuration). `origin` names the text in locations.
///
/// # Errors
/// Every problem in the text, at once.
pub fn from_yaml_str(yaml: &str, origin: &str) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let entities = yaml::read_entities(yaml, origin, &mut problems);
    assemble(&entities, problems).map(|(config, _)| config)
}

/// The text `--help` prints, generated from the entity table.
pub fn help_text() -> String {
    schema::help()
}

/// The text `--version` (the `version` entity) prints.
pub fn version_text() -> String {
    format!("{}\n", env!("CARGO_PKG_VERSION"))
}

/// One top-level item of a configuration file in canonical form (spec §3.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalItem {
    /// The entity name as written.
    pub entity: String,
    /// The item as compact JSON with sorted keys: equal texts mean an unchanged item.
    pub canonical: String,
    /// Whether `reload` applies it (backends and `local-only`); a change to any other item
    /// needs a restart.
    pub reloadable: bool,
}

/// Entities that `reload` restarts; every other item must be unchanged (spec §3.6).
pub const RELOADABLE_ENTITIES: &[&str] = &[
    "tcp-peer",
    "tcp-listener",
    "ws-peer",
    "ws-listener",
    "udp-peer",
    "udp-listener",
    "local-only",
];

/// The items of a YAML configuration in canonical form, for `reload` to tell which
/// non-reloadable items were added, changed or removed. Only the layout is checked here, not
/// the entities' params.
///
/// # Errors
/// YAML syntax errors and items that are not a name or a one-key mapping.
pub fn canonical_items(yaml: &str, origin: &str) -> Result<Vec<CanonicalItem>, ConfigError> {
    let mut problems = Vec::new();
    let items = yaml::canonical_items(yaml, origin, &mut problems);
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    Ok(items
        .into_iter()
        .map(|(entity, canonical)| CanonicalItem {
            reloadable: RELOADABLE_ENTITIES.contains(&entity.as_str()),
            entity,
            canonical,
        })
        .collect())
}

// === what this build does not implement yet ===

/// A feature of the configuration that this build parses but cannot run yet.
type Check = (&'static str, fn(&Config) -> bool);

/// THE list of unimplemented features. `"entity"` or `"entity param"`; the test says when the
/// configuration uses it. Implementing a feature means deleting its line here.
const UNSUPPORTED: &[Check] = &[
    ("ip-router", |c| !c.ip_routers.is_empty()),
    ("work-kubernetes", |c| !c.work_kubernetes.is_empty()),
];

/// Problems for what `config` uses that this build does not implement yet
/// (`not supported yet: <entity>` or `not supported yet: <entity> <param>`), one per feature.
pub fn unsupported(config: &Config) -> Vec<Problem> {
    UNSUPPORTED
        .iter()
        .filter(|(_, used)| used(config))
        .map(|(feature, _)| Problem {
            location: None,
            entity: feature.split(' ').next().map(str::to_owned),
            message: format!("not supported yet: {feature}"),
        })
        .collect()
}

// === assembly ===

/// Params that name a `tls-server` (true) or `tls-client` (false) configuration.
const TLS_REFERENCES: &[(&str, &str, bool)] = &[
    ("control-service", "tls", true),
    ("control-service", "tcptls", true),
    ("grpc-service", "tcptls", true),
    ("command-service", "tls", true),
    ("tcp-server", "tlsserver", true),
    ("tcp-server", "tlsclient", false),
    ("tcp-client", "tlsserver", true),
    ("tcp-client", "tlsclient", false),
    ("unix-socket-server", "tls", false),
    ("unix-socket-client", "tls", true),
    ("tcp-listener", "tls", true),
    ("tcp-peer", "tls", false),
    ("ws-listener", "tls", true),
    ("ws-peer", "tls", false),
    ("telemetry", "tls", false),
];

/// Entity-count rules: singletons once, exclusive entities alone.
fn check_counts(entities: &[RawEntity], problems: &mut Vec<Problem>) {
    let mut seen = BTreeSet::new();
    for raw in entities {
        if raw.spec.singleton && !seen.insert(raw.spec.name) {
            let message = match raw.source {
                Source::CommandLine => {
                    format!("directive \"{}\" is only allowed once", raw.spec.name)
                }
                Source::Yaml | Source::Implicit => {
                    format!("only one {} directive is allowed", raw.spec.name)
                }
            };
            problems.push(raw.problem(None, message));
        }
    }
    if entities.len() > 1 {
        for raw in entities.iter().filter(|r| r.spec.exclusive) {
            problems.push(raw.problem(
                None,
                format!("cannot specify any other options with {}", raw.spec.name),
            ));
        }
    }
}

/// Names defined by `tls-server` / `tls-client` entities; duplicates are problems.
fn tls_names(entities: &[RawEntity], kind: &str, problems: &mut Vec<Problem>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for raw in entities.iter().filter(|r| r.spec.name == kind) {
        let name = raw.string("name");
        if !name.is_empty() && !names.insert(name.clone()) {
            problems.push(raw.problem(Some("name"), format!("duplicate {kind} name {name}")));
        }
    }
    names
}

/// Builds the typed configuration; `Ok((config, version_requested))`.
fn assemble(
    entities: &[RawEntity],
    mut problems: Vec<Problem>,
) -> Result<(Config, bool), ConfigError> {
    check_counts(entities, &mut problems);
    let servers = tls_names(entities, "tls-server", &mut problems);
    let clients = tls_names(entities, "tls-client", &mut problems);

    let mut node = None;
    let mut log_level = None;
    let mut version = false;
    let mut c = Config {
        node: NodeConfig {
            id: String::new(),
            datadir: PathBuf::from(DEFAULT_DATADIR),
            firewall_rules: Vec::new(),
            max_idle_connection_timeout: DEFAULT_IDLE_CONNECTION_TIMEOUT,
            remote_unreachable_timeout: crate::work::DEFAULT_REMOTE_UNREACHABLE_TIMEOUT,
            work_retention: None,
            work_ttl: None,
            receptor_kube_support_reconnect: None,
            receptor_kube_clientset_qps: None,
            receptor_kube_clientset_burst: None,
            receptor_kube_clientset_rate_limiter: None,
        },
        log_level: LogLevel::Info,
        local_only: false,
        trace: false,
        tls_servers: Vec::new(),
        tls_clients: Vec::new(),
        tcp_listeners: Vec::new(),
        tcp_peers: Vec::new(),
        udp_listeners: Vec::new(),
        udp_peers: Vec::new(),
        ws_listeners: Vec::new(),
        ws_peers: Vec::new(),
        control_services: Vec::new(),
        grpc_services: Vec::new(),
        telemetry: None,
        metrics: None,
        work_commands: Vec::new(),
        work_kubernetes: Vec::new(),
        work_signing: None,
        work_verification: None,
        tcp_servers: Vec::new(),
        tcp_clients: Vec::new(),
        udp_servers: Vec::new(),
        udp_clients: Vec::new(),
        unix_socket_servers: Vec::new(),
        unix_socket_clients: Vec::new(),
        command_services: Vec::new(),
        ip_routers: Vec::new(),
        cert_command: None,
        command_runner: None,
        config_file: None,
        args: Vec::new(),
    };

    for raw in entities {
        for (_, key, server) in TLS_REFERENCES
            .iter()
            .filter(|(entity, _, _)| *entity == raw.spec.name)
        {
            let (names, kind) = if *server {
                (&servers, "tls-server")
            } else {
                (&clients, "tls-client")
            };
            if let Some(name) = raw.opt_string(key)
                && !names.contains(&name)
            {
                problems
                    .push(raw.problem(Some(key), format!("no {kind} named {name} is configured")));
            }
        }

        let p = &mut problems;
        match raw.spec.name {
            "node" => {
                if node.is_none() {
                    node = Some(NodeConfig::from_raw(raw, p));
                }
            }
            "local-only" => c.local_only = true,
            "version" => version = true,
            "log-level" => {
                if log_level.is_none() {
                    log_level = Some(LogLevel::from_raw(raw, p));
                }
            }
            "trace" => c.trace = true,
            "tls-server" => c.tls_servers.push(TlsServerConfig::from_raw(raw, p)),
            "tls-client" => c.tls_clients.push(TlsClientConfig::from_raw(raw, p)),
            "control-service" => c
                .control_services
                .push(ControlServiceConfig::from_raw(raw, p)),
            "grpc-service" => c.grpc_services.push(GrpcServiceConfig::from_raw(raw, p)),
            "telemetry" => {
                if c.telemetry.is_none() {
                    c.telemetry = Some(TelemetryConfig::from_raw(raw, p));
                }
            }
            "metrics" => c.metrics = Some(MetricsConfig::from_raw(raw, p)),
            "command-service" => c
                .command_services
                .push(CommandServiceConfig::from_raw(raw, p)),
            "ip-router" => c.ip_routers.push(IpRouterConfig::from_raw(raw, p)),
            "tcp-server" => c.tcp_servers.push(TcpServerConfig::from_raw(raw, p)),
            "tcp-client" => c.tcp_clients.push(TcpClientConfig::from_raw(raw, p)),
            "udp-server" => c.udp_servers.push(UdpServerConfig::from_raw(raw, p)),
            "udp-client" => c.udp_clients.push(UdpClientConfig::from_raw(raw, p)),
            "unix-socket-server" => c
                .unix_socket_servers
                .push(UnixSocketServerConfig::from_raw(raw, p)),
            "unix-socket-client" => c
                .unix_socket_clients
                .push(UnixSocketClientConfig::from_raw(raw, p)),
            "tcp-listener" => c.tcp_listeners.push(TcpListenerConfig::from_raw(raw, p)),
            "tcp-peer" => c.tcp_peers.push(TcpPeerConfig::from_raw(raw, p)),
            "udp-listener" => c.udp_listeners.push(UdpListenerConfig::from_raw(raw, p)),
            "udp-peer" => c.udp_peers.push(UdpPeerConfig::from_raw(raw, p)),
            "ws-listener" => c.ws_listeners.push(WsListenerConfig::from_raw(raw, p)),
            "ws-peer" => c.ws_peers.push(WsPeerConfig::from_raw(raw, p)),
            "work-command" => c.work_commands.push(WorkCommandConfig::from_raw(raw, p)),
            "work-kubernetes" => c
                .work_kubernetes
                .push(WorkKubernetesConfig::from_raw(raw, p)),
            "work-python" => p.push(raw.problem(
                None,
                "[DEPRECATION WARNING] 'work-python' option is not currently being used; remove it from the configuration",
            )),
            "work-signing" => {
                if c.work_signing.is_none() {
                    c.work_signing = Some(WorkSigningConfig::from_raw(raw, p));
                }
            }
            "work-verification" => {
                if c.work_verification.is_none() {
                    c.work_verification = Some(WorkVerificationConfig::from_raw(raw, p));
                }
            }
            "command-runner" => {
                if c.command_runner.is_none() {
                    c.command_runner = Some(CommandRunnerConfig::from_raw(raw, p));
                }
            }
            "cert-init" => {
                c.cert_command
                    .get_or_insert(CertCommand::Init(CertInitConfig::from_raw(raw, p)));
            }
            "cert-makereq" => {
                c.cert_command
                    .get_or_insert(CertCommand::MakeReq(CertMakeReqConfig::from_raw(raw, p)));
            }
            "cert-signreq" => {
                c.cert_command
                    .get_or_insert(CertCommand::SignReq(CertSignReqConfig::from_raw(raw, p)));
            }
            other => p.push(raw.problem(None, format!("entity {other} is not handled"))),
        }

        if matches!(raw.spec.name, "work-command" | "work-kubernetes")
            && raw.bool("verifysignature")
            && !entities.iter().any(|e| e.spec.name == "work-verification")
        {
            let what = if raw.spec.name == "work-command" {
                "work command"
            } else {
                "work kubernetes"
            };
            problems.push(raw.problem(
                Some("verifysignature"),
                format!(
                    "VerifySignature for {what} '{}' is true, but the work verification public key is not specified",
                    raw.string("worktype")
                ),
            ));
        }
    }

    c.log_level = log_level.unwrap_or(LogLevel::Info);
    c.node = match node {
        Some(node) => node,
        None => {
            let spec = schema::entity("node").ok_or_else(|| ConfigError {
                problems: vec![Problem {
                    location: None,
                    entity: None,
                    message: "the node entity is missing from the schema".to_owned(),
                }],
            })?;
            let mut implicit = RawEntity::new(spec, Source::Implicit, None);
            // A utility run alone (version, cert-*) needs no valid node ID.
            let utility_only = entities.iter().any(|e| e.spec.exclusive);
            let mut node_problems = Vec::new();
            implicit.finish(&mut node_problems);
            let node = NodeConfig::from_raw(&implicit, &mut node_problems);
            if !utility_only {
                problems.extend(node_problems);
            }
            node
        }
    };

    if problems.is_empty() {
        Ok((c, version))
    } else {
        Err(ConfigError { problems })
    }
}

#[cfg(test)]
mod tests;
