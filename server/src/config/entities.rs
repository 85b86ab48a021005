//! Typed, validated configuration of every entity (spec/control-work-config.md §3.3,
//! spec/wire.md §1.7). Each `from_raw` applies the checks Go makes at load time (its `Prepare`
//! phase) and appends what is wrong to `problems`; the value it returns is only used when
//! there are no problems at all.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use receptor_mesh::firewall::Rule;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Problem;
use super::raw::RawEntity;

/// The smallest allowed `maxidleconnectiontimeout`.
pub const MIN_IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(21);
/// `maxidleconnectiontimeout` when not given.
pub const DEFAULT_IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(21);
/// `work-signing tokenexpiration` when not given (Go crashes instead, spec §2.12).
pub const DEFAULT_TOKEN_EXPIRATION: Duration = Duration::from_secs(5 * 60);
/// `node datadir` when not given.
pub const DEFAULT_DATADIR: &str = "/tmp/receptor";

// === helpers ===

fn path(raw: &RawEntity, key: &str) -> PathBuf {
    PathBuf::from(raw.string(key))
}

fn opt_path(raw: &RawEntity, key: &str) -> Option<PathBuf> {
    raw.opt_string(key).map(PathBuf::from)
}

fn port(raw: &RawEntity, key: &str, problems: &mut Vec<Problem>) -> u16 {
    let value = raw.int(key).unwrap_or(0);
    u16::try_from(value).unwrap_or_else(|_| {
        problems.push(raw.problem(Some(key), format!("{key} {value} is out of range 0-65535")));
        0
    })
}

fn permissions(raw: &RawEntity, problems: &mut Vec<Problem>) -> u32 {
    let value = raw.int("permissions").unwrap_or(0o600);
    match u32::try_from(value) {
        Ok(mode) if mode <= 0o7777 => mode,
        _ => {
            problems.push(raw.problem(
                Some("permissions"),
                format!("permissions {value:#o} are not a valid file mode"),
            ));
            0o600
        }
    }
}

fn cost(raw: &RawEntity, problems: &mut Vec<Problem>) -> f64 {
    let cost = raw.float("cost").unwrap_or(1.0);
    // Go checks `cost <= 0`; NaN and infinities cannot be compared on both ends, so refuse them too.
    if !(cost > 0.0 && cost.is_finite()) {
        problems.push(raw.problem(Some("cost"), "connection cost must be positive"));
    }
    cost
}

fn node_cost(raw: &RawEntity, problems: &mut Vec<Problem>) -> BTreeMap<String, f64> {
    let map = raw.map("nodecost");
    for (node, cost) in &map {
        if !(*cost > 0.0 && cost.is_finite()) {
            problems.push(raw.problem(
                Some("nodecost"),
                format!("connection cost must be positive for {node}"),
            ));
        }
    }
    map
}

/// `host:port`, with a numeric port (the host may be empty, a name or an `[IPv6]` literal).
fn host_port(raw: &RawEntity, key: &str, problems: &mut Vec<Problem>) -> String {
    let address = raw.string(key);
    let ok = address
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
    if !ok && raw.is_given(key) {
        problems.push(raw.problem(
            Some(key),
            format!("address {address} is not of the form host:port"),
        ));
    }
    address
}

fn time_param(raw: &RawEntity, key: &str, problems: &mut Vec<Problem>) -> Option<OffsetDateTime> {
    let text = raw.opt_string(key)?;
    match OffsetDateTime::parse(&text, &Rfc3339) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(raw.problem(
                Some(key),
                format!("{key} {text:?} is not an RFC 3339 date/time: {e}"),
            ));
            None
        }
    }
}

/// Hex SHA-256 or SHA-512 fingerprints; colons between bytes are allowed.
fn fingerprints(raw: &RawEntity, key: &str, problems: &mut Vec<Problem>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for text in raw.list(key).unwrap_or_default() {
        let hex: String = text.chars().filter(|c| *c != ':').collect();
        let bytes = decode_hex(&hex);
        match bytes {
            Some(b) if b.len() == 32 || b.len() == 64 => out.push(b),
            _ => problems.push(raw.problem(
                Some(key),
                format!("invalid fingerprint {text:?}: expected a hex SHA-256 or SHA-512 digest"),
            )),
        }
    }
    out
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

/// The reason a ws-peer address is not a `ws://` or `wss://` URL with a host.
fn ws_url_error(address: &str) -> Option<String> {
    let Some((scheme, rest)) = address.split_once("://") else {
        return Some("missing scheme (expected ws:// or wss://)".to_owned());
    };
    if !scheme.eq_ignore_ascii_case("ws") && !scheme.eq_ignore_ascii_case("wss") {
        return Some(format!(
            "unsupported scheme {scheme:?} (expected ws or wss)"
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => return Some("unterminated IPv6 literal".to_owned()),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Some("missing host".to_owned());
    }
    if let Some(port) = port
        && !port.is_empty()
        && port.parse::<u16>().is_err()
    {
        return Some(format!("invalid port {port:?}"));
    }
    None
}

// === core ===

/// `node`: the identity and global settings of this node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node ID (default: the host name).
    pub id: String,
    /// Where work units and other state live.
    pub datadir: PathBuf,
    /// Firewall rules in evaluation order.
    pub firewall_rules: Vec<Rule>,
    /// Idle time after which a backend connection is dropped (≥ 21 s).
    pub max_idle_connection_timeout: Duration,
    /// How long a remote node may stay unreachable before the remote work units sent to it
    /// fail (`remoteunreachabletimeout`, a Rust extension; Go retries for ever).
    pub remote_unreachable_timeout: Duration,
    /// How long finished units (Succeeded, Failed, Canceled) are kept before the engine
    /// releases them (`workretention`, a Rust extension; `None` or `0`: kept until released,
    /// as in Go).
    pub work_retention: Option<Duration>,
    /// The ttl of remote work submitted without one (`workttl`, a Rust extension; `None` or
    /// `0`: no expiry, as in Go). A unit whose remote node cannot be reached within it fails
    /// as `Work unit expired on ...`.
    pub work_ttl: Option<Duration>,
    /// Accepted for compatibility; only the Go v2 parser uses these.
    pub receptor_kube_support_reconnect: Option<String>,
    /// Accepted for compatibility; only the Go v2 parser uses it.
    pub receptor_kube_clientset_qps: Option<String>,
    /// Accepted for compatibility; only the Go v2 parser uses it.
    pub receptor_kube_clientset_burst: Option<String>,
    /// Accepted for compatibility; only the Go v2 parser uses it.
    pub receptor_kube_clientset_rate_limiter: Option<String>,
}

/// `Rule` has no `PartialEq`; two rules compare equal when their debug forms do, which
/// covers every field they have.
impl PartialEq for NodeConfig {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.datadir == other.datadir
            && format!("{:?}", self.firewall_rules) == format!("{:?}", other.firewall_rules)
            && self.max_idle_connection_timeout == other.max_idle_connection_timeout
            && self.remote_unreachable_timeout == other.remote_unreachable_timeout
            && self.work_retention == other.work_retention
            && self.work_ttl == other.work_ttl
            && self.receptor_kube_support_reconnect == other.receptor_kube_support_reconnect
            && self.receptor_kube_clientset_qps == other.receptor_kube_clientset_qps
            && self.receptor_kube_clientset_burst == other.receptor_kube_clientset_burst
            && self.receptor_kube_clientset_rate_limiter
                == other.receptor_kube_clientset_rate_limiter
    }
}

/// The host name, as Go's `os.Hostname` would give it on Linux.
pub(crate) fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
}

/// The default node ID from a host name; `localhost` and `localhost.*` are refused.
pub(crate) fn node_id_from_hostname(hostname: Option<String>) -> Result<String, String> {
    match hostname {
        None => Err("no node ID specified and the host name is unknown".to_owned()),
        Some(h)
            if h.eq_ignore_ascii_case("localhost")
                || h.to_ascii_lowercase().starts_with("localhost.") =>
        {
            Err(format!(
                "no node ID specified and the host name {h:?} cannot be used as one"
            ))
        }
        Some(h) => Ok(h),
    }
}

impl NodeConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        let id = match raw.opt_string("id") {
            Some(id) => id,
            None => node_id_from_hostname(hostname()).unwrap_or_else(|e| {
                problems.push(raw.problem(Some("id"), e));
                String::new()
            }),
        };
        if !id.is_empty()
            && let Err(e) = receptor_mesh::validate_node_id(&id)
        {
            problems.push(raw.problem(Some("id"), e.to_string()));
        }
        let mut firewall_rules = Vec::new();
        for (i, map) in raw.rules("firewallrules").iter().enumerate() {
            match Rule::parse(map) {
                Ok(rule) => firewall_rules.push(rule),
                Err(e) => problems.push(raw.problem(
                    Some("firewallrules"),
                    format!("firewall rule {}: {e}", i + 1),
                )),
            }
        }
        let timeout = raw
            .duration("maxidleconnectiontimeout")
            .unwrap_or(DEFAULT_IDLE_CONNECTION_TIMEOUT);
        if timeout < MIN_IDLE_CONNECTION_TIMEOUT {
            problems.push(raw.problem(
                Some("maxidleconnectiontimeout"),
                format!(
                    "maxidleconnectiontimeout must be at least {}s",
                    MIN_IDLE_CONNECTION_TIMEOUT.as_secs()
                ),
            ));
        }
        Self {
            id,
            datadir: opt_path(raw, "datadir").unwrap_or_else(|| PathBuf::from(DEFAULT_DATADIR)),
            firewall_rules,
            max_idle_connection_timeout: timeout,
            remote_unreachable_timeout: raw
                .duration("remoteunreachabletimeout")
                .unwrap_or(crate::work::DEFAULT_REMOTE_UNREACHABLE_TIMEOUT),
            work_retention: raw.duration("workretention").filter(|d| !d.is_zero()),
            work_ttl: raw.duration("workttl").filter(|d| !d.is_zero()),
            receptor_kube_support_reconnect: raw.opt_string("receptorkubesupportreconnect"),
            receptor_kube_clientset_qps: raw.opt_string("receptorkubeclientsetqps"),
            receptor_kube_clientset_burst: raw.opt_string("receptorkubeclientsetburst"),
            receptor_kube_clientset_rate_limiter: raw
                .opt_string("receptorkubeclientsetratelimiter"),
        }
    }
}

/// `log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Errors only (the entity's default).
    Error,
    /// Errors and warnings.
    Warning,
    /// Also informational messages (the default without a `log-level` entity).
    Info,
    /// Everything.
    Debug,
}

impl LogLevel {
    /// The level's name as Go prints it (`ERROR`, `WARNING`, `INFO`, `DEBUG`).
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "ERROR",
            LogLevel::Warning => "WARNING",
            LogLevel::Info => "INFO",
            LogLevel::Debug => "DEBUG",
        }
    }

    /// The lower-case name used by `--log-level` and by the command runner's argv.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warning => "warning",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }

    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        let text = raw.string("level");
        match text.to_ascii_lowercase().as_str() {
            "error" => LogLevel::Error,
            "warning" => LogLevel::Warning,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            _ => {
                problems.push(raw.problem(
                    Some("level"),
                    format!("invalid log level {text:?}: expected error, warning, info or debug"),
                ));
                LogLevel::Error
            }
        }
    }
}

// === TLS ===

/// `tls-server`: a named server-side TLS configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsServerConfig {
    /// The name other entities refer to.
    pub name: String,
    /// Certificate file (PEM).
    pub cert: PathBuf,
    /// Private key file (PEM).
    pub key: PathBuf,
    /// Require and verify a client certificate.
    pub require_client_cert: bool,
    /// CA bundle to verify client certificates with.
    pub client_cas: Option<PathBuf>,
    /// Pinned client certificate digests (32 or 64 bytes each).
    pub pinned_client_cert: Vec<Vec<u8>>,
    /// Skip the startup check that the certificate names this node.
    pub skip_receptor_names_check: bool,
    /// Require TLS 1.3.
    pub min_tls13: bool,
}

impl TlsServerConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        Self {
            name: raw.string("name"),
            cert: path(raw, "cert"),
            key: path(raw, "key"),
            require_client_cert: raw.bool("requireclientcert"),
            client_cas: opt_path(raw, "clientcas"),
            pinned_client_cert: fingerprints(raw, "pinnedclientcert", problems),
            skip_receptor_names_check: raw.bool("skipreceptornamescheck"),
            min_tls13: raw.bool("mintls13"),
        }
    }
}

/// `tls-client`: a named client-side TLS configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsClientConfig {
    /// The name other entities refer to.
    pub name: String,
    /// Client certificate file (given together with `key`, or not at all).
    pub cert: Option<PathBuf>,
    /// Client private key file.
    pub key: Option<PathBuf>,
    /// CA bundle replacing the system roots.
    pub root_cas: Option<PathBuf>,
    /// Accept any server certificate.
    pub insecure_skip_verify: bool,
    /// Pinned server certificate digests (32 or 64 bytes each).
    pub pinned_server_cert: Vec<Vec<u8>>,
    /// Skip the startup check that the certificate names this node.
    pub skip_receptor_names_check: bool,
    /// Require TLS 1.3.
    pub min_tls13: bool,
}

impl TlsClientConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        let cert = opt_path(raw, "cert");
        let key = opt_path(raw, "key");
        if cert.is_some() != key.is_some() {
            problems.push(raw.problem(None, "cert and key must both be supplied or neither"));
        }
        Self {
            name: raw.string("name"),
            cert,
            key,
            root_cas: opt_path(raw, "rootcas"),
            insecure_skip_verify: raw.bool("insecureskipverify"),
            pinned_server_cert: fingerprints(raw, "pinnedservercert", problems),
            skip_receptor_names_check: raw.bool("skipreceptornamescheck"),
            min_tls13: raw.bool("mintls13"),
        }
    }
}

// === control and services ===

/// `control-service`: the classic control protocol on up to three listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlServiceConfig {
    /// Mesh service name (≤ 8 bytes); `None` when given empty (no mesh listener).
    pub service: Option<String>,
    /// Unix socket path.
    pub filename: Option<PathBuf>,
    /// Unix socket file mode.
    pub permissions: u32,
    /// tls-server name for the mesh listener.
    pub tls: Option<String>,
    /// TCP listen address, always `host:port` (a bare port became `0.0.0.0:port`).
    pub tcp_listen: Option<String>,
    /// tls-server name for the TCP listener.
    pub tcp_tls: Option<String>,
}

impl ControlServiceConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        let service = raw.opt_string("service");
        if let Some(name) = &service
            && let Err(e) = receptor_mesh::ServiceName::try_from(name.as_str())
        {
            problems.push(raw.problem(Some("service"), e.to_string()));
        }
        let filename = opt_path(raw, "filename");
        let tcp_listen = tcp_listen(raw, problems);
        if service.is_none() && filename.is_none() && tcp_listen.is_none() {
            problems.push(raw.problem(None, "no listeners specified"));
        }
        Self {
            service,
            filename,
            permissions: permissions(raw, problems),
            tls: raw.opt_string("tls"),
            tcp_listen,
            tcp_tls: raw.opt_string("tcptls"),
        }
    }
}

/// `telemetry` (Rust only): OpenTelemetry trace export. Unset params are left to the
/// standard `OTEL_*` variables (see [`crate::telemetry`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector URL.
    pub endpoint: Option<String>,
    /// tls-client name for an `https://` collector.
    pub tls: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: Option<String>,
    /// Ratio of new traces sampled, in `0..=1`.
    pub sample_ratio: Option<f64>,
}

impl TelemetryConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        let endpoint = raw.opt_string("endpoint");
        let tls = raw.opt_string("tls");
        // The scheme says whether the collector speaks TLS, and TLS needs the tls-client
        // that says whom to trust: one without the other would fail at the first export.
        match (&endpoint, &tls) {
            (Some(endpoint), None) if !endpoint.starts_with("http://") => {
                problems.push(raw.problem(
                    Some("endpoint"),
                    format!(
                        "endpoint {endpoint:?} must be an http:// URL, or an https:// URL with tls set to a tls-client"
                    ),
                ));
            }
            (Some(endpoint), Some(_)) if !endpoint.starts_with("https://") => {
                problems.push(raw.problem(
                    Some("endpoint"),
                    format!("endpoint {endpoint:?} must be an https:// URL when tls is set"),
                ));
            }
            (None, Some(_)) => {
                problems.push(raw.problem(
                    Some("tls"),
                    "tls needs an https:// endpoint in the entity".to_owned(),
                ));
            }
            _ => {}
        }
        let sample_ratio = raw.float("sampleratio");
        if let Some(ratio) = sample_ratio
            && !(0.0..=1.0).contains(&ratio)
        {
            problems.push(raw.problem(
                Some("sampleratio"),
                format!("sampleratio {ratio} is not between 0 and 1"),
            ));
        }
        Self {
            endpoint,
            tls,
            service_name: raw.opt_string("servicename"),
            sample_ratio,
        }
    }
}

/// `grpc-service` (Rust only): the gRPC control API on a Unix socket and/or TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcServiceConfig {
    /// Unix socket path.
    pub filename: Option<PathBuf>,
    /// Unix socket file mode.
    pub permissions: u32,
    /// TCP listen address, always `host:port` (a bare port became `0.0.0.0:port`).
    pub tcp_listen: Option<String>,
    /// tls-server name for the TCP listener.
    pub tcp_tls: Option<String>,
}

impl GrpcServiceConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        let filename = opt_path(raw, "filename");
        let tcp_listen = tcp_listen(raw, problems);
        if filename.is_none() && tcp_listen.is_none() {
            problems.push(raw.problem(None, "no listeners specified (filename or tcplisten)"));
        }
        let tcp_tls = raw.opt_string("tcptls");
        if tcp_tls.is_some() && tcp_listen.is_none() {
            problems.push(raw.problem(Some("tcptls"), "tcptls needs tcplisten"));
        }
        Self {
            filename,
            permissions: permissions(raw, problems),
            tcp_listen,
            tcp_tls,
        }
    }
}

/// `tcplisten`: `host:port` as given, or a bare port on every IPv4 address.
fn tcp_listen(raw: &RawEntity, problems: &mut Vec<Problem>) -> Option<String> {
    listen_param(raw, "tcplisten", problems)
}

/// A listen address param: `host:port` as given, or a bare port on every IPv4 address.
fn listen_param(raw: &RawEntity, key: &str, problems: &mut Vec<Problem>) -> Option<String> {
    raw.opt_string(key).map(|listen| {
        if listen.contains(':') {
            listen
        } else {
            if listen.parse::<u16>().is_err() {
                problems.push(raw.problem(
                    Some(key),
                    format!("{key} {listen:?} is neither a port nor host:port"),
                ));
            }
            format!("0.0.0.0:{listen}")
        }
    })
}

/// `metrics` (Rust only): the Prometheus text endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Listen address, always `host:port` (a bare port became `0.0.0.0:port`).
    pub listen: String,
    /// URL path of the exposition, starting with `/`.
    pub path: String,
}

impl MetricsConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        let listen = listen_param(raw, "listen", problems).unwrap_or_default();
        let path = raw.string("path");
        if !path.starts_with('/') || path.contains(char::is_whitespace) {
            problems.push(raw.problem(
                Some("path"),
                format!("path {path:?} must start with / and contain no spaces"),
            ));
        }
        Self { listen, path }
    }
}

/// `command-service`: runs a command in a PTY for each mesh connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandServiceConfig {
    /// Mesh service name.
    pub service: String,
    /// The command line as written.
    pub command: String,
    /// The command line split shell-style: the program, then its arguments (never empty
    /// in a configuration that was accepted).
    pub argv: Vec<String>,
    /// tls-server name.
    pub tls: Option<String>,
}

impl CommandServiceConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        let service = raw.string("service");
        if let Err(e) = receptor_mesh::ServiceName::try_from(service.as_str()) {
            problems.push(raw.problem(Some("service"), e.to_string()));
        }
        let command = raw.string("command");
        let argv = match crate::work::shlex::split(&command) {
            Ok(argv) if argv.is_empty() => {
                problems.push(raw.problem(Some("command"), "command is empty".to_owned()));
                argv
            }
            Ok(argv) => argv,
            Err(e) => {
                problems.push(raw.problem(Some("command"), format!("cannot split command: {e}")));
                Vec::new()
            }
        };
        Self {
            service,
            command,
            argv,
            tls: raw.opt_string("tls"),
        }
    }
}

/// `ip-router`: a tun interface routed over the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRouterConfig {
    /// Network name, also the service name.
    pub network_name: String,
    /// tun interface name.
    pub interface: Option<String>,
    /// Local IPv4 /30 network.
    pub local_net: String,
    /// Subnets to advertise (from the comma-separated `routes`).
    pub routes: Vec<String>,
}

impl IpRouterConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        let local_net = raw.string("localnet");
        let is_v4_30 = local_net
            .split_once('/')
            .is_some_and(|(ip, bits)| ip.parse::<std::net::Ipv4Addr>().is_ok() && bits == "30");
        if raw.is_given("localnet") && !is_v4_30 {
            problems.push(raw.problem(
                Some("localnet"),
                format!("localnet {local_net:?} must be an IPv4 /30 network"),
            ));
        }
        Self {
            network_name: raw.string("networkname"),
            interface: raw.opt_string("interface"),
            local_net,
            routes: raw
                .string("routes")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }
}

/// `tcp-server`: a TCP listener whose connections go to a mesh service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpServerConfig {
    /// Local TCP port.
    pub port: u16,
    /// Local address.
    pub bind_addr: String,
    /// Destination node (`localhost` is this node).
    pub remote_node: String,
    /// Destination service.
    pub remote_service: String,
    /// tls-server name for the TCP side.
    pub tls_server: Option<String>,
    /// tls-client name for the mesh side.
    pub tls_client: Option<String>,
}

impl TcpServerConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        Self {
            port: port(raw, "port", problems),
            bind_addr: raw.string("bindaddr"),
            remote_node: raw.string("remotenode"),
            remote_service: raw.string("remoteservice"),
            tls_server: raw.opt_string("tlsserver"),
            tls_client: raw.opt_string("tlsclient"),
        }
    }
}

/// `tcp-client`: a mesh service whose connections go to a TCP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpClientConfig {
    /// Mesh service name.
    pub service: String,
    /// TCP destination, `host:port`.
    pub address: String,
    /// tls-server name for the mesh side.
    pub tls_server: Option<String>,
    /// tls-client name for the TCP side.
    pub tls_client: Option<String>,
}

impl TcpClientConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        Self {
            service: raw.string("service"),
            address: host_port(raw, "address", problems),
            tls_server: raw.opt_string("tlsserver"),
            tls_client: raw.opt_string("tlsclient"),
        }
    }
}

/// `udp-server`: a UDP port forwarded to a mesh service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpServerConfig {
    /// Local UDP port.
    pub port: u16,
    /// Local address.
    pub bind_addr: String,
    /// Destination node.
    pub remote_node: String,
    /// Destination service.
    pub remote_service: String,
}

impl UdpServerConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        Self {
            port: port(raw, "port", problems),
            bind_addr: raw.string("bindaddr"),
            remote_node: raw.string("remotenode"),
            remote_service: raw.string("remoteservice"),
        }
    }
}

/// `udp-client`: a mesh service forwarded to a UDP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpClientConfig {
    /// Mesh service name.
    pub service: String,
    /// UDP destination, `host:port`.
    pub address: String,
}

impl UdpClientConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        Self {
            service: raw.string("service"),
            address: host_port(raw, "address", problems),
        }
    }
}

/// `unix-socket-server`: a Unix socket forwarded to a mesh service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocketServerConfig {
    /// Socket path (replaced if it exists).
    pub filename: PathBuf,
    /// Socket file mode.
    pub permissions: u32,
    /// Destination node.
    pub remote_node: String,
    /// Destination service.
    pub remote_service: String,
    /// tls-client name for the mesh side.
    pub tls: Option<String>,
}

impl UnixSocketServerConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        Self {
            filename: path(raw, "filename"),
            permissions: permissions(raw, problems),
            remote_node: raw.string("remotenode"),
            remote_service: raw.string("remoteservice"),
            tls: raw.opt_string("tls"),
        }
    }
}

/// `unix-socket-client`: a mesh service forwarded to an existing Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocketClientConfig {
    /// Mesh service name.
    pub service: String,
    /// Socket path (must exist when connecting).
    pub filename: PathBuf,
    /// tls-server name for the mesh side.
    pub tls: Option<String>,
}

impl UnixSocketClientConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        Self {
            service: raw.string("service"),
            filename: existing_file(raw, "filename", "socket", problems),
            tls: raw.opt_string("tls"),
        }
    }
}

// === backends ===

/// `tcp-listener`.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpListenerConfig {
    /// Local TCP port (0: any).
    pub port: u16,
    /// Local address.
    pub bind_addr: String,
    /// tls-server name.
    pub tls: Option<String>,
    /// Cost of every connection (> 0).
    pub cost: f64,
    /// Per-node costs overriding `cost` (each > 0).
    pub node_cost: BTreeMap<String, f64>,
    /// Node IDs allowed to connect; `None` allows everyone, `Some(vec![])` nobody.
    pub allowed_peers: Option<Vec<String>>,
}

impl TcpListenerConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        Self {
            port: port(raw, "port", problems),
            bind_addr: raw.string("bindaddr"),
            tls: raw.opt_string("tls"),
            cost: cost(raw, problems),
            node_cost: node_cost(raw, problems),
            allowed_peers: raw.list("allowedpeers"),
        }
    }
}

/// `tcp-peer`.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpPeerConfig {
    /// `host:port` to dial.
    pub address: String,
    /// Redial after a failure or a lost connection.
    pub redial: bool,
    /// tls-client name.
    pub tls: Option<String>,
    /// Connection cost (> 0).
    pub cost: f64,
    /// Node IDs allowed on this connection; `None` allows everyone.
    pub allowed_peers: Option<Vec<String>>,
}

impl TcpPeerConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        Self {
            address: host_port(raw, "address", problems),
            redial: raw.bool("redial"),
            tls: raw.opt_string("tls"),
            cost: cost(raw, problems),
            allowed_peers: raw.list("allowedpeers"),
        }
    }
}

/// `udp-listener`.
#[derive(Debug, Clone, PartialEq)]
pub struct UdpListenerConfig {
    /// Local UDP port (0: any).
    pub port: u16,
    /// Local address.
    pub bind_addr: String,
    /// Cost of every connection (> 0).
    pub cost: f64,
    /// Per-node costs overriding `cost`.
    pub node_cost: BTreeMap<String, f64>,
    /// Node IDs allowed to connect; `None` allows everyone.
    pub allowed_peers: Option<Vec<String>>,
}

impl UdpListenerConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        Self {
            port: port(raw, "port", problems),
            bind_addr: raw.string("bindaddr"),
            cost: cost(raw, problems),
            node_cost: node_cost(raw, problems),
            allowed_peers: raw.list("allowedpeers"),
        }
    }
}

/// `udp-peer`.
#[derive(Debug, Clone, PartialEq)]
pub struct UdpPeerConfig {
    /// `host:port` to send to.
    pub address: String,
    /// Redial after the session ends.
    pub redial: bool,
    /// Connection cost (> 0).
    pub cost: f64,
    /// Node IDs allowed on this connection; `None` allows everyone.
    pub allowed_peers: Option<Vec<String>>,
}

impl UdpPeerConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        Self {
            address: host_port(raw, "address", problems),
            redial: raw.bool("redial"),
            cost: cost(raw, problems),
            allowed_peers: raw.list("allowedpeers"),
        }
    }
}

/// `ws-listener`.
#[derive(Debug, Clone, PartialEq)]
pub struct WsListenerConfig {
    /// Local TCP port (0: any).
    pub port: u16,
    /// Local address.
    pub bind_addr: String,
    /// HTTP path served (Go `ServeMux` semantics: `/` matches everything).
    pub path: String,
    /// tls-server name (wss).
    pub tls: Option<String>,
    /// Cost of every connection (> 0).
    pub cost: f64,
    /// Per-node costs overriding `cost`.
    pub node_cost: BTreeMap<String, f64>,
    /// Node IDs allowed to connect; `None` allows everyone.
    pub allowed_peers: Option<Vec<String>>,
}

impl WsListenerConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        Self {
            port: port(raw, "port", problems),
            bind_addr: raw.string("bindaddr"),
            path: raw.string("path"),
            tls: raw.opt_string("tls"),
            cost: cost(raw, problems),
            node_cost: node_cost(raw, problems),
            allowed_peers: raw.list("allowedpeers"),
        }
    }
}

/// `ws-peer`.
#[derive(Debug, Clone, PartialEq)]
pub struct WsPeerConfig {
    /// `ws://` or `wss://` URL.
    pub address: String,
    /// Redial after a failure or a lost connection.
    pub redial: bool,
    /// One extra HTTP header for the upgrade request: (name, value), both trimmed.
    pub extra_header: Option<(String, String)>,
    /// tls-client name (Go falls back to a built-in `default` for wss; see spec §3.3).
    pub tls: Option<String>,
    /// Connection cost (> 0).
    pub cost: f64,
    /// Node IDs allowed on this connection; `None` allows everyone.
    pub allowed_peers: Option<Vec<String>>,
}

impl WsPeerConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        let address = raw.string("address");
        if raw.is_given("address")
            && let Some(reason) = ws_url_error(&address)
        {
            problems.push(raw.problem(
                Some("address"),
                format!("address {address} is not a valid URL: {reason}"),
            ));
        }
        let extra_header = raw
            .opt_string("extraheader")
            .and_then(|h| match h.split_once(':') {
                Some((name, value)) if !name.trim().is_empty() => {
                    Some((name.trim().to_owned(), value.trim().to_owned()))
                }
                _ => {
                    problems.push(raw.problem(
                        Some("extraheader"),
                        "extra header must be in the form key:value",
                    ));
                    None
                }
            });
        Self {
            address,
            redial: raw.bool("redial"),
            extra_header,
            tls: raw.opt_string("tls"),
            cost: cost(raw, problems),
            allowed_peers: raw.list("allowedpeers"),
        }
    }
}

// === work ===

/// `work-command`: a work type run by a local command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkCommandConfig {
    /// Work type name.
    pub work_type: String,
    /// Program to run.
    pub command: String,
    /// Parameters, split shell-style (may be empty).
    pub params: String,
    /// Whether submitters may append parameters.
    pub allow_runtime_params: bool,
    /// Whether submissions must carry a valid signature.
    pub verify_signature: bool,
}

impl WorkCommandConfig {
    pub(crate) fn from_raw(raw: &RawEntity, _problems: &mut Vec<Problem>) -> Self {
        Self {
            work_type: raw.string("worktype"),
            command: raw.string("command"),
            params: raw.string("params"),
            allow_runtime_params: raw.bool("allowruntimeparams"),
            verify_signature: raw.bool("verifysignature"),
        }
    }
}

/// How a Kubernetes worker authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeAuthMethod {
    /// From the `kubeconfig` file.
    KubeConfig,
    /// The pod's service account.
    InCluster,
    /// From the submission (`secret_kube_config`).
    Runtime,
}

/// How a Kubernetes worker exchanges stdin/stdout with the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeStreamMethod {
    /// Attach + follow the container log.
    Logger,
    /// The pod connects back over TCP.
    Tcp,
}

/// `work-kubernetes`: a work type run as a Kubernetes pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkKubernetesConfig {
    /// Work type name.
    pub work_type: String,
    /// Namespace for the pods.
    pub namespace: Option<String>,
    /// Container image.
    pub image: Option<String>,
    /// Command overriding the entrypoint.
    pub command: Option<String>,
    /// Parameters for the entrypoint.
    pub params: Option<String>,
    /// Authentication method.
    pub auth_method: KubeAuthMethod,
    /// Kubeconfig file (only with `KubeAuthMethod::KubeConfig`).
    pub kube_config: Option<PathBuf>,
    /// Pod definition file.
    pub pod: Option<PathBuf>,
    /// Allow auth params at runtime.
    pub allow_runtime_auth: bool,
    /// Allow image and command at runtime.
    pub allow_runtime_command: bool,
    /// Allow extra params at runtime.
    pub allow_runtime_params: bool,
    /// Allow a pod definition at runtime.
    pub allow_runtime_pod: bool,
    /// On restart, delete pods of pending units.
    pub delete_pod_on_restart: bool,
    /// Stream method.
    pub stream_method: KubeStreamMethod,
    /// Whether submissions must carry a valid signature.
    pub verify_signature: bool,
}

impl WorkKubernetesConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        let auth_text = raw.string("authmethod");
        let auth_method = match auth_text.to_ascii_lowercase().as_str() {
            "kubeconfig" => KubeAuthMethod::KubeConfig,
            "incluster" => KubeAuthMethod::InCluster,
            "runtime" => KubeAuthMethod::Runtime,
            _ => {
                problems.push(raw.problem(
                    Some("authmethod"),
                    format!("invalid authmethod {auth_text:?}: expected kubeconfig, incluster or runtime"),
                ));
                KubeAuthMethod::InCluster
            }
        };
        let stream_text = raw.string("streammethod");
        let stream_method = match stream_text.to_ascii_lowercase().as_str() {
            "logger" => KubeStreamMethod::Logger,
            "tcp" => KubeStreamMethod::Tcp,
            _ => {
                problems.push(raw.problem(
                    Some("streammethod"),
                    format!("invalid streammethod {stream_text:?}: expected logger or tcp"),
                ));
                KubeStreamMethod::Logger
            }
        };
        let cfg = Self {
            work_type: raw.string("worktype"),
            namespace: raw.opt_string("namespace"),
            image: raw.opt_string("image"),
            command: raw.opt_string("command"),
            params: raw.opt_string("params"),
            auth_method,
            kube_config: opt_path(raw, "kubeconfig"),
            pod: opt_path(raw, "pod"),
            allow_runtime_auth: raw.bool("allowruntimeauth"),
            allow_runtime_command: raw.bool("allowruntimecommand"),
            allow_runtime_params: raw.bool("allowruntimeparams"),
            allow_runtime_pod: raw.bool("allowruntimepod"),
            delete_pod_on_restart: raw.bool("deletepodonrestart"),
            stream_method,
            verify_signature: raw.bool("verifysignature"),
        };
        if cfg.namespace.is_none() && cfg.kube_config.is_none() && !cfg.allow_runtime_auth {
            problems.push(raw.problem(
                None,
                "must provide namespace when neither kubeconfig nor allowruntimeauth is given",
            ));
        }
        if let Some(kc) = &cfg.kube_config {
            if cfg.auth_method != KubeAuthMethod::KubeConfig {
                problems.push(raw.problem(
                    Some("kubeconfig"),
                    "kubeconfig may only be given with authmethod=kubeconfig",
                ));
            } else if !kc.exists() {
                problems.push(raw.problem(
                    Some("kubeconfig"),
                    format!("kubeconfig file {} does not exist", kc.display()),
                ));
            }
        }
        if cfg.pod.is_some()
            && (cfg.image.is_some() || cfg.command.is_some() || cfg.params.is_some())
        {
            problems.push(raw.problem(
                Some("pod"),
                "pod cannot be combined with image, command or params",
            ));
        }
        if cfg.image.is_none()
            && cfg.pod.is_none()
            && !cfg.allow_runtime_command
            && !cfg.allow_runtime_pod
        {
            problems.push(raw.problem(
                None,
                "must specify a container image (or pod, allowruntimecommand or allowruntimepod)",
            ));
        }
        cfg
    }
}

/// `work-signing`: the key used to sign remote work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkSigningConfig {
    /// Private key file; it must exist, but is only parsed when signing.
    pub private_key: PathBuf,
    /// Lifetime of a signature (default 5 min).
    pub token_expiration: Duration,
}

fn existing_file(raw: &RawEntity, key: &str, what: &str, problems: &mut Vec<Problem>) -> PathBuf {
    let file = path(raw, key);
    if file.as_os_str().is_empty() {
        // A missing required param was reported already.
        if !raw.spec.param(key).is_some_and(|p| p.required) {
            problems.push(raw.problem(Some(key), format!("{what} file is not specified")));
        }
    } else if !file.exists() {
        problems.push(raw.problem(
            Some(key),
            format!("{what} file {} does not exist", file.display()),
        ));
    }
    file
}

impl WorkSigningConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        Self {
            private_key: existing_file(raw, "privatekey", "private key", problems),
            token_expiration: raw
                .duration("tokenexpiration")
                .unwrap_or(DEFAULT_TOKEN_EXPIRATION),
        }
    }
}

/// `work-verification`: the key that verifies signed work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkVerificationConfig {
    /// Public key file; it must exist, but is only parsed when verifying.
    pub public_key: PathBuf,
}

impl WorkVerificationConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        Self {
            public_key: existing_file(raw, "publickey", "public key", problems),
        }
    }
}

/// `command-runner` (hidden): this process runs one command for a work unit (spec §2.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRunnerConfig {
    /// Program to run.
    pub command: String,
    /// Parameters (may be empty).
    pub params: String,
    /// The unit directory holding `status`, `stdin` and `stdout`.
    pub unit_dir: PathBuf,
}

impl CommandRunnerConfig {
    pub(crate) fn from_raw(raw: &RawEntity, _problems: &mut Vec<Problem>) -> Self {
        Self {
            command: raw.string("command"),
            params: raw.string("params"),
            unit_dir: path(raw, "unitdir"),
        }
    }
}

// === certificates ===

/// The certificate utility to run instead of a node (`cert-init`, `cert-makereq`, `cert-signreq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertCommand {
    /// `cert-init`.
    Init(CertInitConfig),
    /// `cert-makereq`.
    MakeReq(CertMakeReqConfig),
    /// `cert-signreq`.
    SignReq(CertSignReqConfig),
}

/// `cert-init`: create a self-signed CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInitConfig {
    /// Subject common name.
    pub common_name: String,
    /// RSA key size.
    pub bits: u32,
    /// Start of validity (default: now).
    pub not_before: Option<OffsetDateTime>,
    /// End of validity (default: 10 years).
    pub not_after: Option<OffsetDateTime>,
    /// Where to write the certificate.
    pub out_cert: PathBuf,
    /// Where to write the private key.
    pub out_key: PathBuf,
}

fn bits(raw: &RawEntity, problems: &mut Vec<Problem>) -> Option<u32> {
    let value = raw.int("bits")?;
    match u32::try_from(value) {
        Ok(b) if b > 0 => Some(b),
        _ => {
            problems.push(raw.problem(Some("bits"), format!("bits {value} must be positive")));
            None
        }
    }
}

impl CertInitConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        Self {
            common_name: raw.string("commonname"),
            bits: bits(raw, problems).unwrap_or(0),
            not_before: time_param(raw, "notbefore", problems),
            not_after: time_param(raw, "notafter", problems),
            out_cert: path(raw, "outcert"),
            out_key: path(raw, "outkey"),
        }
    }
}

/// The key of a certificate request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertReqKey {
    /// Use an existing private key (`inkey`).
    Existing(PathBuf),
    /// Generate a key of `bits` and save it (`outkey`).
    New {
        /// Where to write the key.
        path: PathBuf,
        /// RSA key size.
        bits: u32,
    },
}

/// `cert-makereq`: create a certificate request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertMakeReqConfig {
    /// Subject common name.
    pub common_name: String,
    /// DNS names for the SAN.
    pub dns_names: Vec<String>,
    /// IP addresses for the SAN.
    pub ip_addresses: Vec<IpAddr>,
    /// Receptor node IDs for the SAN (otherName 1.3.6.1.4.1.2312.19.1).
    pub node_ids: Vec<String>,
    /// Where to write the request.
    pub out_req: PathBuf,
    /// The key to use or generate.
    pub key: CertReqKey,
}

impl CertMakeReqConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        let bits = bits(raw, problems);
        let key = match (opt_path(raw, "inkey"), opt_path(raw, "outkey")) {
            (Some(inkey), None) => {
                if raw.is_given("bits") {
                    problems.push(raw.problem(Some("bits"), "bits cannot be given with inkey"));
                }
                CertReqKey::Existing(inkey)
            }
            (None, Some(outkey)) => {
                if !raw.is_given("bits") {
                    problems.push(raw.problem(None, "bits must be given with outkey"));
                }
                CertReqKey::New {
                    path: outkey,
                    bits: bits.unwrap_or(0),
                }
            }
            _ => {
                problems.push(raw.problem(None, "exactly one of inkey or outkey must be given"));
                CertReqKey::Existing(PathBuf::new())
            }
        };
        let mut ip_addresses = Vec::new();
        for text in raw.list("ipaddress").unwrap_or_default() {
            match text.parse::<IpAddr>() {
                Ok(ip) => ip_addresses.push(ip),
                Err(_) => problems
                    .push(raw.problem(Some("ipaddress"), format!("invalid IP address {text:?}"))),
            }
        }
        Self {
            common_name: raw.string("commonname"),
            dns_names: raw.list("dnsname").unwrap_or_default(),
            ip_addresses,
            node_ids: raw.list("nodeid").unwrap_or_default(),
            out_req: path(raw, "outreq"),
            key,
        }
    }
}

/// `cert-signreq`: sign a certificate request with a CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSignReqConfig {
    /// The request file.
    pub req: PathBuf,
    /// CA certificate file.
    pub ca_cert: PathBuf,
    /// CA private key file.
    pub ca_key: PathBuf,
    /// Start of validity (default: now).
    pub not_before: Option<OffsetDateTime>,
    /// End of validity (default: 1 year).
    pub not_after: Option<OffsetDateTime>,
    /// Where to write the certificate.
    pub out_cert: PathBuf,
    /// Sign without the interactive confirmation.
    pub verify: bool,
}

impl CertSignReqConfig {
    pub(crate) fn from_raw(raw: &RawEntity, problems: &mut Vec<Problem>) -> Self {
        Self {
            req: path(raw, "req"),
            ca_cert: path(raw, "cacert"),
            ca_key: path(raw, "cakey"),
            not_before: time_param(raw, "notbefore", problems),
            not_after: time_param(raw, "notafter", problems),
            out_cert: path(raw, "outcert"),
            verify: raw.bool("verify"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_defaults() {
        assert_eq!(
            node_id_from_hostname(Some("box1".into())),
            Ok("box1".into())
        );
        assert!(node_id_from_hostname(Some("localhost".into())).is_err());
        assert!(node_id_from_hostname(Some("LocalHost.localdomain".into())).is_err());
        assert!(node_id_from_hostname(None).is_err());
        assert_eq!(
            node_id_from_hostname(Some("localhostess".into())),
            Ok("localhostess".into())
        );
    }

    #[test]
    fn ws_urls() {
        for ok in [
            "ws://host:8080/path",
            "wss://host",
            "WS://h:1",
            "ws://[::1]:80/",
            "ws://u:p@h:2/x?y",
        ] {
            assert_eq!(ws_url_error(ok), None, "{ok}");
        }
        for bad in [
            "host:8080",
            "http://host",
            "ws://",
            "ws://:80",
            "ws://h:port",
            "ws://[::1",
        ] {
            assert!(ws_url_error(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn hex_fingerprints() {
        assert_eq!(decode_hex("0aFF"), Some(vec![0x0a, 0xff]));
        assert_eq!(decode_hex("0a:F"), None);
        assert_eq!(decode_hex("zz"), None);
        assert_eq!(decode_hex("é1"), None);
    }
}
